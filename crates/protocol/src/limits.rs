//! Limits that are part of the contract: documented in `docs/protocol.md`, so a client can
//! rely on them and every service enforces the same numbers. Limits an operator sets
//! (`max_body_bytes`, `max_group_members`...) are configuration, not here.

/// Messages or conversations per `history`/`conversations` page unless the client asks
/// otherwise, and the most it may ask for.
/// Characters of a message body kept as a preview: the conversation list's, and a reply's
/// quote.
pub const PREVIEW_CHARS: usize = 100;

pub const HISTORY_PAGE_DEFAULT: u32 = 50;
pub const HISTORY_PAGE_MAX: u32 = 100;

/// The most conversations one `changed` history query answers (previews left out, so the
/// answer stays far below 1 MiB). A replay that finds this many falls back to reading the
/// user's subjects with consumers.
pub const CHANGED_CONVERSATIONS_MAX: u32 = 1000;

/// Members per `group` `members` page unless the client asks otherwise, and the most.
pub const MEMBERS_PAGE_DEFAULT: u32 = 200;
pub const MEMBERS_PAGE_MAX: u32 = 1000;

/// Groups per `group` `mine` page unless the client asks otherwise, and the most. The
/// default is the default most groups per user, so a client that does not page sees all of
/// a user's groups unless an operator raises that limit.
pub const GROUPS_PAGE_DEFAULT: u32 = 200;
pub const GROUPS_PAGE_MAX: u32 = 200;

/// The most JSON bytes of entries in one `mine` or `members` page: far below NATS's
/// smallest usual `max_payload` (1 MiB), whatever the entries hold. A page that reaches it
/// ends early, with `more: true`.
pub const LIST_PAGE_MAX_BYTES: usize = 256 * 1024;

/// Users named in one group `add` or `remove`.
pub const USERS_PER_GROUP_OPERATION: usize = 1000;

/// Users one connection may watch the presence of at once.
pub const WATCHED_USERS_MAX: usize = 256;

/// The most bytes of one reaction (meant to be one emoji, which may take several code points).
pub const REACTION_MAX_BYTES: usize = 32;
/// The most different reactions one message may carry; a new one beyond them is refused.
pub const REACTION_KINDS_MAX: usize = 20;

/// Whether `emoji` may be a reaction: 1 to `REACTION_MAX_BYTES` bytes without whitespace or
/// control characters (empty removes one, and is checked by the caller).
pub fn valid_reaction(emoji: &str) -> bool {
    (1..=REACTION_MAX_BYTES).contains(&emoji.len())
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The page size a client asked for, defaulted and clamped to `1..=max`.
pub fn page(asked: Option<u32>, default: u32, max: u32) -> u32 {
    asked.unwrap_or(default).clamp(1, max)
}

/// How many of `sizes` (each entry's encoded bytes, in page order) fit in a page of at most
/// `max_bytes`; at least one, so a page always moves forward.
pub fn fitting(sizes: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0;
    let mut n = 0;
    for size in sizes {
        total += size + 1; // and a comma
        if n > 0 && total > max_bytes {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_end_at_their_byte_limit_but_never_empty() {
        assert_eq!(fitting([10, 10, 10], 25), 2);
        assert_eq!(fitting([100, 10], 25), 1);
        assert_eq!(fitting([], 25), 0);
        assert_eq!(fitting([1; 5], 1000), 5);
    }

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
