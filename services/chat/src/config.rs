//! The chat service's configuration.

use serde::{Deserialize, Serialize};

/// Configuration of one chat service instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatConfig {
    /// Largest accepted message body, in bytes (UTF-8).
    pub max_body_bytes: usize,
    /// Answer `natter.chat.send` requests (validate, de-duplicate, persist, answer SENT).
    pub ingest: bool,
    /// Route persisted messages and receipts to gateways. Ingest and routing can be scaled,
    /// or restarted, independently: routing resumes from the durable consumer.
    pub route: bool,
    /// Sends processed at once by this instance; further requests wait in the NATS
    /// subscription (and time out at the gateway as `unavailable` if the wait is too long).
    pub max_concurrent_sends: usize,
    /// How often the presence view drops sessions of gateways whose lease lapsed.
    pub presence_sweep_ms: u64,
    /// Messages handed to the router at once; also its bound on unacknowledged messages.
    pub router_batch: usize,
    /// How long a routed message may stay unacknowledged before it is routed again.
    pub router_ack_wait_ms: u64,
    /// The most members a group may have.
    pub max_group_members: usize,
    /// The most groups one user may be in: nobody can be added to more, so no one can bury
    /// a user under groups (their group list and replay stay within one NATS reply).
    pub max_groups_per_user: usize,
    /// Who may add a user to a group (with `create`'s members or `add`): only their
    /// contacts, users they share a 1:1 conversation with (the default), or anyone. See
    /// `docs/security.md`.
    pub group_adds: GroupAdds,
    /// Groups with more members than this are large: left out of `sync` replays, so their
    /// members catch up from history (fan-out on read). See `docs/protocol.md`.
    pub large_group_members: usize,
    /// Typing indicators are shown in groups up to this many members (beyond it they would
    /// cost more than they tell).
    pub typing_group_members: usize,
    /// How long after sending it a user may edit a message (0: never).
    pub edit_window_secs: u64,
    /// How long after sending it a user may delete a message for everyone (0: never). Group
    /// owners and admins may delete any member's message of their group at any time.
    pub delete_window_secs: u64,
    /// An uploaded attachment no message carries after this long is removed, and its bytes
    /// given back to the uploader's quota.
    pub unsent_attachment_ttl_secs: u64,
    /// How often the chat service looks for such uploads (each instance reads the list of
    /// attachments once per period).
    pub attachment_sweep_secs: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            ingest: true,
            route: true,
            max_concurrent_sends: 4096,
            presence_sweep_ms: 1_000,
            router_batch: 512,
            router_ack_wait_ms: 30_000,
            max_group_members: 500,
            max_groups_per_user: 200,
            group_adds: GroupAdds::Contacts,
            large_group_members: 1_000,
            typing_group_members: 256,
            edit_window_secs: 15 * 60,
            delete_window_secs: 2 * 24 * 3600,
            unsent_attachment_ttl_secs: 24 * 3600,
            attachment_sweep_secs: 3600,
        }
    }
}

/// Whose adds to groups a user accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupAdds {
    /// Only from users they have exchanged a 1:1 message with (asked of the history
    /// service), like "my contacts" in the messengers people know.
    Contacts,
    /// From anyone (for closed deployments where every user knows every other); the
    /// per-user group limit still holds.
    Anyone,
}
