//! Limits that are part of the contract: documented in `docs/protocol.md`, so a client can
//! rely on them and every service enforces the same numbers. Limits an operator sets
//! (`max_body_bytes`, `max_group_members`...) are configuration, not here.

/// Messages or conversations per `history`/`conversations` page unless the client asks
/// otherwise, and the most it may ask for.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;
pub const HISTORY_PAGE_MAX: u32 = 100;

/// Members per `group` `members` page unless the client asks otherwise, and the most.
pub const MEMBERS_PAGE_DEFAULT: u32 = 200;
pub const MEMBERS_PAGE_MAX: u32 = 1000;

/// Users named in one group `add` or `remove`.
pub const USERS_PER_GROUP_OPERATION: usize = 1000;

/// Users one connection may watch the presence of at once.
pub const WATCHED_USERS_MAX: usize = 256;

/// The page size a client asked for, defaulted and clamped to `1..=max`.
pub fn page(asked: Option<u32>, default: u32, max: u32) -> u32 {
    asked.unwrap_or(default).clamp(1, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_and_clamp() {
        assert_eq!(page(None, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX), 50);
        assert_eq!(page(Some(0), HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX), 1);
        assert_eq!(page(Some(7), HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX), 7);
        assert_eq!(
            page(Some(5000), MEMBERS_PAGE_DEFAULT, MEMBERS_PAGE_MAX),
            1000
        );
    }
}
