//! Groups as stored in the `natter_groups` KV bucket, and the in-memory view of them that the
//! chat service (routing, authorising sends and operations) and the history service
//! (authorising reads) keep by watching the bucket.
//!
//! The bucket is the source of truth: one key per group (`<group>`, its [`GroupRecord`]) and
//! one per membership (`<group>.<user>`, its [`MemberRecord`]). A key per member keeps every
//! write small whatever the group's size (a group of 100,000 would not fit in one value), and
//! lets a watcher apply one change at a time.

pub mod records;
pub mod view;

pub use records::{GroupRecord, MemberRecord, group_record, membership};
pub use view::GroupView;
