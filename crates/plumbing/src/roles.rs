//! The long-running tasks of a service (its roles), stopped together: when one fails or
//! panics the others are told to stop, and `wait` returns the first failure.

use tokio::task::{JoinError, JoinSet};
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

    /// Waits until every role has stopped. A role that returns an error or panics is a
    /// failure: the others are told to stop, and the first failure is returned. A role that
    /// was cancelled (aborted) is not a failure.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first = None;
        while let Some(done) = self.tasks.join_next().await {
            let failure = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => anyhow::anyhow!("service role panicked: {}", panic_message(e)),
            };
            tracing::error!(error = %failure, "service role failed");
            self.stop.cancel();
            first.get_or_insert(failure);
        }
        first.map_or(Ok(()), Err)
    }

    /// Kills every role at once, as a crash would (tests).
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.stop.cancel();
    }
}

/// What a panicked task said, when it said it with a string (as `panic!` does).
fn panic_message(e: JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Long enough for a healthy `wait` on an idle machine many times over.
    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_panicking_role_stops_the_others_and_fails_wait() {
        let shutdown = CancellationToken::new();
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        roles.spawn(async move {
            stop.cancelled().await;
            Ok(())
        });
        roles.spawn(async { panic!("role exploded") });

        let result = tokio::time::timeout(PATIENCE, roles.wait())
            .await
            .expect("the waiting role was told to stop");
        let error = result.expect_err("a panic is a failure");
        assert!(error.to_string().contains("role exploded"), "{error}");
        assert!(
            !shutdown.is_cancelled(),
            "only the roles stop, not the caller"
        );
    }

    #[tokio::test]
    async fn a_failing_role_stops_the_others_and_wait_returns_the_first_error() {
        let shutdown = CancellationToken::new();
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        roles.spawn(async move {
            stop.cancelled().await;
            anyhow::bail!("second, after the stop")
        });
        roles.spawn(async { anyhow::bail!("first") });

        let result = tokio::time::timeout(PATIENCE, roles.wait())
            .await
            .expect("the waiting role was told to stop");
        assert_eq!(result.expect_err("a failure").to_string(), "first");
    }

    #[tokio::test]
    async fn roles_stopped_by_shutdown_end_without_error() {
        let shutdown = CancellationToken::new();
        let mut roles = Roles::new(&shutdown);
        for _ in 0..3 {
            let stop = roles.stop();
            roles.spawn(async move {
                stop.cancelled().await;
                Ok(())
            });
        }
        shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, roles.wait())
            .await
            .expect("every role stopped");
        assert!(result.is_ok());
    }
}
