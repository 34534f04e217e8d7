//! Checking what a group request carries before anything is read or written: ids, group
//! names, and the user lists with their per-operation limit.

use protocol::groups::MAX_GROUP_NAME_CHARS;
use protocol::{GroupId, UserId, limits};

use crate::refusal::GroupError;

pub(super) fn group_id(s: &str) -> Result<GroupId, GroupError> {
    GroupId::new(s).map_err(|_| GroupError::InvalidGroupId)
}

pub(super) fn user_id(s: &str) -> Result<UserId, GroupError> {
    UserId::new(s).map_err(|_| GroupError::InvalidUserId(s.to_string()))
}

/// Valid, distinct user ids, at most [`limits::USERS_PER_GROUP_OPERATION`], without `except`.
pub(super) fn user_ids(users: &[String], except: &UserId) -> Result<Vec<UserId>, GroupError> {
    if users.len() > limits::USERS_PER_GROUP_OPERATION {
        return Err(GroupError::TooManyUsers);
    }
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let user = user_id(u)?;
        if &user != except && !out.contains(&user) {
            out.push(user);
        }
    }
    Ok(out)
}

/// The name trimmed, if it has 1 to [`MAX_GROUP_NAME_CHARS`] characters and no control ones.
pub(super) fn group_name(name: &str) -> Result<String, GroupError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(GroupError::NameLength);
    }
    if name.chars().any(char::is_control) {
        return Err(GroupError::NameControlCharacters);
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_user_lists_are_checked() {
        assert!(group_name("  ").is_err());
        assert!(group_name(&"x".repeat(101)).is_err());
        assert!(group_name("a\nb").is_err());
        assert_eq!(group_name(" Team ").ok().as_deref(), Some("Team"));
        let alice = UserId::new("alice").unwrap();
        let users = user_ids(&["bob".into(), "bob".into(), "alice".into()], &alice)
            .ok()
            .unwrap();
        assert_eq!(users, [UserId::new("bob").unwrap()]);
        assert!(user_ids(&["bob.*".into()], &alice).is_err());
        assert!(user_ids(&vec!["x".to_string(); 1001], &alice).is_err());
    }
}
