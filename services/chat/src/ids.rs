//! Permanent message ids.

use std::sync::Mutex;

use protocol::MessageId;

/// Message ids of this instance are strictly increasing, also within one millisecond, so id
/// order is acceptance order (history pages sort by id).
#[derive(Default)]
pub struct MessageIds(Mutex<ulid::Generator>);

impl MessageIds {
    pub fn next(&self) -> MessageId {
        let mut ids = self.0.lock().unwrap();
        // Fails only after 2^80 ids in one millisecond; a fresh ULID is then still unique.
        MessageId(ids.generate().unwrap_or_else(|_| ulid::Ulid::new()))
    }
}
