//! Consent to be added: with `group_adds = contacts` (the default) a user is added to a group
//! only by a contact, someone they share a 1:1 conversation with (a message was exchanged),
//! as the history service knows it. The same notion of contact decides whose presence a user
//! may watch.
//!
//! History stores a message a few milliseconds after its `sent`: a "no" is asked again once
//! the history writers have stored the streams up to their head as it was then, so adding
//! someone right after the first message with them is not refused.

use std::time::Duration;

use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, ConversationId, UserId, subjects};

use super::GroupOps;
use crate::config::GroupAdds;
use crate::refusal::GroupError;

/// How long the history service may take to say whether two users are contacts.
const CONTACT_PATIENCE: Duration = Duration::from_secs(5);
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
            && let Some(head) = plumbing::bus::heads(&self.js, self.partitions).await
            && self.history_floor.reach(&head).await
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

/// Whether `a` and `b` share a 1:1 conversation: its newest message, asked of the history
/// service, asking as `a` (the chat identity may publish on `natter.history.query.*`).
async fn are_contacts(
    nats: async_nats::Client,
    a: &UserId,
    b: &UserId,
) -> Result<bool, GroupError> {
    if a == b {
        return Ok(true);
    }
    let request = HistoryRequest {
        user: a.clone(),
        qid: ClientMsgId::new("contact").expect("valid id"),
        query: HistoryQuery::Messages {
            conversation: ConversationId::direct(a, b),
            before: None,
            after: None,
            limit: 1,
        },
    };
    let payload = serde_json::to_vec(&request).expect("history request to JSON");
    let asked = nats.request(subjects::history_query(a), payload.into());
    let reply = tokio::time::timeout(CONTACT_PATIENCE, asked)
        .await
        .map_err(|_| GroupError::ContactsUnavailable("history did not answer".into()))?
        .map_err(|e| GroupError::ContactsUnavailable(e.into()))?;
    match serde_json::from_slice::<ServerFrame>(&reply.payload) {
        Ok(ServerFrame::History { messages, .. }) => Ok(!messages.is_empty()),
        Ok(ServerFrame::Error { code, .. }) => Err(GroupError::ContactsUnavailable(
            format!("history refused the question with {}", u16::from(code)).into(),
        )),
        Ok(_) => Err(GroupError::ContactsUnavailable(
            "history answered with another frame".into(),
        )),
        Err(e) => Err(GroupError::ContactsUnavailable(e.into())),
    }
}
