//! Groups on the wire: roles, what a group looks like to a member, the operations a client
//! may ask for, and the system events that record membership changes in the conversation.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, GroupId, UserId};

/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 100;

/// A member's role. Owners and admins manage members; only an owner makes or unmakes admins,
/// and an owner cannot be removed (they leave, or stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    /// May add and remove members (and rename the group).
    pub fn manages(self) -> bool {
        self >= Role::Admin
    }
}

/// A group as one of its members (or a former member, after leaving) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub group: GroupId,
    pub conversation: ConversationId,
    pub name: String,
    /// How many members it has now.
    pub members: u32,
    /// The asking user's role; absent once they are no longer a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A large group is not part of `sync` replays: its members catch up from history
    /// (fan-out on read; see `docs/protocol.md`, "Large groups").
    pub large: bool,
    pub created_by: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_ts: u64,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
}

/// What happened to a group, recorded as a system message in its conversation (the message's
/// `from` is who did it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GroupEvent {
    Created { name: String, members: Vec<UserId> },
    Renamed { name: String },
    Added { users: Vec<UserId>, role: Role },
    Removed { users: Vec<UserId> },
    Left,
    RoleChanged { user: UserId, role: Role },
}

/// A group operation, as carried by `natter.chat.group` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GroupOp {
    /// Create a group with the caller as owner and these users as members.
    Create {
        name: String,
        #[serde(default)]
        members: Vec<String>,
    },
    Rename {
        group: String,
        name: String,
    },
    /// Add users (as members, or with `role` admin; owner only for admins).
    Add {
        group: String,
        users: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    Remove {
        group: String,
        users: Vec<String>,
    },
    Leave {
        group: String,
    },
    /// Make a member an admin or a plain member again (owner only).
    SetRole {
        group: String,
        member: String,
        role: Role,
    },
    /// The group's details.
    Info {
        group: String,
    },
    /// A page of the caller's groups, by group id, after `after`.
    Mine {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// A page of members, by user id, after `after`.
    Members {
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
}
