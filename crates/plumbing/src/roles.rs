//! The long-running tasks of a service (its roles), stopped together: when one fails the
//! others are told to stop, and `wait` returns the first error.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub struct Roles {
    tasks: JoinSet<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Roles {
    /// Roles that stop when `shutdown` is cancelled (or one of them fails).
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: shutdown.child_token(),
        }
    }

    /// The token every role watches.
    pub fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn spawn(
        &mut self,
        role: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.spawn(role);
    }

    /// Waits until every role has stopped, returning the first error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "service role failed");
                self.stop.cancel();
                result = Err(e);
            }
        }
        result
    }

    /// Kills every role at once, as a crash would (tests).
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.stop.cancel();
    }
}
