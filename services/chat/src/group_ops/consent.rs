//! Consent to be added: with `group_adds = contacts` (the default) a user is added to a group
//! only by a contact, someone they share a 1:1 conversation with (a message was exchanged),
//! as the history service knows it. The same notion of contact decides whose presence a user
//! may watch.
//!
//! History stores a message a few milliseconds after its `sent`: a "no" is asked again once
//! the history writers have stored the streams up to their head as it was then, so adding
//! someone right after the first message with them is not refused.

use futures::StreamExt;
use protocol::{ConversationId, UserId};

use super::GroupOps;
use crate::config::GroupAdds;
use crate::refusal::GroupError;

/// Contact questions one operation keeps in flight.
const QUESTIONS_AT_ONCE: usize = 32;

impl GroupOps {
    /// Refused, naming them all, if any of `joining` does not accept adds from `actor`: the
    /// whole operation, so nobody is added by an operation that is then repeated without the
    /// ones refused.
    pub(super) async fn check_consent(
        &self,
        actor: &UserId,
        joining: &[UserId],
    ) -> Result<(), GroupError> {
        if self.config.group_adds == GroupAdds::Anyone {
            return Ok(());
        }
        let mut strangers = self.not_contacts(actor, joining.to_vec()).await?;
        if !strangers.is_empty()
            && self
                .history_floor
                .caught_up(&self.js, self.partitions)
                .await
        {
            strangers = self.not_contacts(actor, strangers).await?;
        }
        if strangers.is_empty() {
            Ok(())
        } else {
            Err(GroupError::NotContacts {
                users: strangers.iter().map(UserId::to_string).collect(),
            })
        }
    }

    /// Those of `users` who are not contacts of `actor`, as history knows it now.
    async fn not_contacts(
        &self,
        actor: &UserId,
        users: Vec<UserId>,
    ) -> Result<Vec<UserId>, GroupError> {
        let answers: Vec<(UserId, Result<bool, GroupError>)> = futures::stream::iter(users)
            .map(|user| {
                let (nats, actor) = (self.nats.clone(), actor.clone());
                async move {
                    let contact = are_contacts(nats, &actor, &user).await;
                    (user, contact)
                }
            })
            .buffered(QUESTIONS_AT_ONCE)
            .collect()
            .await;
        let mut strangers = Vec::new();
        for (user, contact) in answers {
            if !contact? {
                strangers.push(user);
            }
        }
        Ok(strangers)
    }
}

/// Whether `a` and `b` share a 1:1 conversation: it has a message, asked of history as `a`.
async fn are_contacts(
    nats: async_nats::Client,
    a: &UserId,
    b: &UserId,
) -> Result<bool, GroupError> {
    if a == b {
        return Ok(true);
    }
    let conversation = ConversationId::direct(a, b);
    crate::history_page::newest(&nats, a, &conversation, None, 1)
        .await
        .map(|messages| !messages.is_empty())
        .map_err(GroupError::ContactsUnavailable)
}
