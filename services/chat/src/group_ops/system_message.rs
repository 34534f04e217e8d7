//! The system message that records a change in the group's conversation: the event, the
//! bucket revision the router waits for, and its human text ("alice added bob and 3 others").

use protocol::frames::Message;
use protocol::payloads::StoredMessage;
use protocol::{ClientMsgId, ConversationId, GroupEvent, GroupId, Role, UserId, subjects};

use super::GroupOps;
use super::writes::json;

/// Names listed in a system message's text before "and N others".
const NAMES_IN_TEXT: usize = 10;

impl GroupOps {
    /// Appends the system message recording `event` to the group's conversation, carrying
    /// `rev` for the router. The change is already in the bucket; a failure here loses the
    /// record, not the change.
    pub(super) async fn record(
        &self,
        group: &GroupId,
        actor: &UserId,
        event: GroupEvent,
        rev: u64,
    ) {
        self.metrics.group_operations.inc();
        let id = self.ids.next();
        let stored = StoredMessage {
            message: Message {
                attachment: None,
                reacted: Vec::new(),
                reactions: Vec::new(),
                change: None,
                deleted: false,
                edited: None,
                id,
                conversation: ConversationId::group(group),
                from: actor.clone(),
                to: UserId::new(group.as_str()).expect("a group id is a valid user id"),
                cid: ClientMsgId::new(id.to_string()).expect("a ULID is a valid id"),
                body: describe(actor, &event),
                ts: id.timestamp_ms(),
                cursor: None,
                event: Some(event),
                state: None,
                reply: None,
            },
            origin: None,
            groups_revision: Some(rev),
        };
        let subject = subjects::message(&stored.message.conversation, self.partitions);
        let published = match self.js.publish(subject, json(&stored)).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, %group, "group event not recorded in the conversation");
        }
    }
}

/// The readable text of a system message.
fn describe(actor: &UserId, event: &GroupEvent) -> String {
    let names = |users: &[UserId]| {
        let mut text = users
            .iter()
            .take(NAMES_IN_TEXT)
            .map(UserId::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if users.len() > NAMES_IN_TEXT {
            text.push_str(&format!(" and {} others", users.len() - NAMES_IN_TEXT));
        }
        text
    };
    match event {
        GroupEvent::Created { name, .. } => format!("{actor} created the group {name}"),
        GroupEvent::Renamed { name } => format!("{actor} renamed the group to {name}"),
        GroupEvent::Added { users, role } => match role {
            Role::Admin => format!("{actor} added {} as admin", names(users)),
            _ => format!("{actor} added {}", names(users)),
        },
        GroupEvent::Removed { users } => format!("{actor} removed {}", names(users)),
        GroupEvent::Left => format!("{actor} left"),
        GroupEvent::RoleChanged { user, role } => {
            let role = match role {
                Role::Owner => "the owner",
                Role::Admin => "an admin",
                Role::Member => "a member",
            };
            format!("{actor} made {user} {role}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_read_well_and_stay_short() {
        let alice = UserId::new("alice").unwrap();
        let users: Vec<UserId> = (0..12)
            .map(|i| UserId::new(format!("u{i}")).unwrap())
            .collect();
        let event = GroupEvent::Added {
            users,
            role: Role::Member,
        };
        assert_eq!(
            describe(&alice, &event),
            "alice added u0, u1, u2, u3, u4, u5, u6, u7, u8, u9 and 2 others"
        );
        let event = GroupEvent::RoleChanged {
            user: UserId::new("bob").unwrap(),
            role: Role::Admin,
        };
        assert_eq!(describe(&alice, &event), "alice made bob an admin");
    }
}
