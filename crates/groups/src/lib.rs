//! Groups as stored in the `natter_groups` KV bucket, sharded like the messages: the view of
//! one shard that the chat instance holding it keeps by watching the shard's keys, and the
//! client with which chat and history ask about any group.
//!
//! The bucket is the source of truth: one key per group (`<k>.g.<group>`, its
//! [`GroupRecord`]), one per membership (`<k>.m.<group>.<user>`, its [`MemberRecord`]) under
//! the group's partition `k`, and one per entry of a user's list of groups
//! (`<j>.u.<user>.<group>`) under the user's shard `j`. A key per member keeps every write
//! small whatever the group's size (a group of 100,000 would not fit in one value), and lets
//! a watcher apply one change at a time; the prefix lets a holder follow its shard only.

pub mod client;
pub mod layout;
pub mod records;
pub mod view;

pub use client::{Groups, Holder, serve_shard};
pub use records::{GroupRecord, MemberRecord, delete_key, group_record, membership};
pub use view::GroupView;
