//! The state of the asker's own messages in a history page (SENT, DELIVERED, SEEN), so a
//! client that reloads shows the ticks it showed live. It follows the live `delivered` and
//! `seen` frames: in a 1:1 conversation from the other participant's markers; in a group of
//! up to `receipt_lists_max` members (where those frames are sent) from the furthest marker
//! among the other current members. Larger groups carry no state: their senders ask
//! `receipts` for counts.
//!
//! Markers are read when the page is asked for, not kept with the cached page: they move on
//! every receipt. A page without the asker's messages reads none.

use protocol::frames::{Message, MessageState};
use protocol::{ConversationId, MessageId, UserId};

use crate::membership::Membership;
use crate::store::Store;

/// Sets `state` on `user`'s messages in `messages`. A marker that cannot be read leaves the
/// states out (the page is still answered).
pub async fn mark_own<S: Store>(
    store: &S,
    membership: &dyn Membership,
    receipt_lists_max: usize,
    user: &UserId,
    conversation: &ConversationId,
    messages: &mut [Message],
) {
    if !messages.iter().any(|m| m.from == *user) {
        return;
    }
    let furthest =
        match furthest_markers(store, membership, receipt_lists_max, user, conversation).await {
            Ok(Some(furthest)) => furthest,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, %conversation, "message states left out");
                return;
            }
        };
    for m in messages.iter_mut().filter(|m| m.from == *user) {
        m.state = Some(state_of(m.id, furthest));
    }
}

/// How far the others have received and read: the furthest delivered and read markers.
type Furthest = (Option<MessageId>, Option<MessageId>);

fn state_of(id: MessageId, (delivered, seen): Furthest) -> MessageState {
    if seen >= Some(id) {
        MessageState::Seen
    } else if delivered >= Some(id) {
        MessageState::Delivered
    } else {
        MessageState::Sent
    }
}

/// The other side's furthest markers; `None` for a group too large to say.
async fn furthest_markers<S: Store>(
    store: &S,
    membership: &dyn Membership,
    receipt_lists_max: usize,
    user: &UserId,
    conversation: &ConversationId,
) -> anyhow::Result<Option<Furthest>> {
    if let Some(peer) = conversation.peer_of(user) {
        let theirs = store.receipt_markers(&peer, conversation).await?;
        return Ok(Some((theirs.delivered, theirs.seen)));
    }
    let Some(group) = conversation.group_id() else {
        return Ok(None);
    };
    let (Some(members), _) = membership
        .members_if_at_most(&group, receipt_lists_max)
        .await?
    else {
        return Ok(None);
    };
    let markers = store.group_markers(&group).await?;
    let others = markers
        .iter()
        .filter(|m| m.user != *user && members.contains(&m.user));
    Ok(Some(others.fold((None, None), |(d, s), m| {
        (d.max(m.delivered), s.max(m.seen))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_wins_over_delivered_and_both_over_sent() {
        let id = |n: u128| MessageId(ulid::Ulid(n));
        let furthest = (Some(id(20)), Some(id(10)));
        assert_eq!(state_of(id(5), furthest), MessageState::Seen);
        assert_eq!(state_of(id(10), furthest), MessageState::Seen);
        assert_eq!(state_of(id(15), furthest), MessageState::Delivered);
        assert_eq!(state_of(id(21), furthest), MessageState::Sent);
        assert_eq!(state_of(id(1), (None, None)), MessageState::Sent);
    }
}
