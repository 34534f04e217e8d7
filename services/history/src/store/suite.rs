//! The behavioural contract of a [`Store`], run against every implementation: the embedded
//! store in this crate's tests, and the ScyllaDB store against a real CQL server.
//! Each function takes an empty store.

use protocol::frames::Message;
use protocol::{ClientMsgId, ConversationId, GroupId, MessageId, UserId};

use super::{BUCKET_MS, Page, Role, Store};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A message at `ts` (ms since the epoch); ids sort by `ts`, then by `seq`.
pub fn message(from: &str, conversation: &ConversationId, to: &str, ts: u64, seq: u64) -> Message {
    let id = MessageId(ulid::Ulid::from_parts(ts, seq as u128));
    Message {
        id,
        conversation: conversation.clone(),
        from: user(from),
        to: user(to),
        cid: ClientMsgId::new(format!("c{ts}-{seq}")).unwrap(),
        body: format!("{from} says {seq}"),
        ts,
        cursor: None,
        event: None,
    }
}

fn dm(a: &str, b: &str) -> ConversationId {
    ConversationId::direct(&user(a), &user(b))
}

const T0: u64 = 1_750_000_000_000;

/// `n` messages alternating between alice and bob, one millisecond apart.
fn chat(n: u64) -> Vec<Message> {
    let c = dm("alice", "bob");
    (0..n)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                ("alice", "bob")
            } else {
                ("bob", "alice")
            };
            message(from, &c, to, T0 + i, i)
        })
        .collect()
}

fn ids(ms: &[Message]) -> Vec<MessageId> {
    ms.iter().map(|m| m.id).collect()
}

pub async fn append_and_read_back<S: Store>(s: &S) {
    let all = chat(10);
    s.append(&all).await.unwrap();
    let latest = s.page(&dm("alice", "bob"), Page::Latest, 50).await.unwrap();
    let mut expected = all.clone();
    expected.reverse();
    assert_eq!(latest, expected, "newest first, every field intact");
    let two = s.page(&dm("bob", "alice"), Page::Latest, 2).await.unwrap();
    assert_eq!(ids(&two), ids(&expected[..2]));
    assert!(
        s.page(&dm("alice", "carol"), Page::Latest, 50)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn latest_walks_back_across_day_buckets<S: Store>(s: &S) {
    let g = GroupId::new("team").unwrap();
    let c = ConversationId::group(&g);
    for u in ["alice", "bob"] {
        s.put_member(&g, &user(u), Role::Member).await.unwrap();
    }
    let midnight = (T0 / BUCKET_MS + 1) * BUCKET_MS;
    let yesterday: Vec<Message> = (0..30)
        .map(|i| message("alice", &c, "team", midnight - 1_000 + i, i))
        .collect();
    let today: Vec<Message> = (0..30)
        .map(|i| message("bob", &c, "team", midnight + 1_000 + i, i))
        .collect();
    s.append(&yesterday).await.unwrap();
    s.append(&today).await.unwrap();

    let latest = s.page(&c, Page::Latest, 50).await.unwrap();
    let mut expected: Vec<Message> = yesterday.iter().chain(&today).cloned().collect();
    expected.reverse();
    assert_eq!(
        ids(&latest),
        ids(&expected[..50]),
        "30 of today, then 20 of yesterday"
    );

    let older = s.page(&c, Page::Before(today[0].id), 50).await.unwrap();
    assert_eq!(older.len(), 30);
    assert_eq!(older[0].id, yesterday[29].id);
    let newer = s.page(&c, Page::After(yesterday[25].id), 10).await.unwrap();
    assert_eq!(ids(&newer), ids(&[&yesterday[26..], &today[..6]].concat()));
}

pub async fn scroll_back_has_no_gap_and_no_duplicate<S: Store>(s: &S) {
    let all = chat(1000);
    for batch in all.chunks(100) {
        s.append(batch).await.unwrap();
    }
    let c = dm("alice", "bob");
    let mut seen = s.page(&c, Page::Latest, 50).await.unwrap();
    loop {
        let oldest = seen.last().unwrap().id;
        let page = s.page(&c, Page::Before(oldest), 50).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page);
    }
    let mut expected = ids(&all);
    expected.reverse();
    assert_eq!(ids(&seen), expected);
}

pub async fn catch_up_after_a_cursor<S: Store>(s: &S) {
    let all = chat(100);
    s.append(&all).await.unwrap();
    let c = dm("alice", "bob");
    let page = s.page(&c, Page::After(all[39].id), 25).await.unwrap();
    assert_eq!(ids(&page), ids(&all[40..65]), "ascending from the cursor");
    let tail = s.page(&c, Page::After(all[99].id), 25).await.unwrap();
    assert!(tail.is_empty(), "nothing after the newest");
}

pub async fn conversation_list_orders_by_activity_and_counts_unread<S: Store>(s: &S) {
    let (ab, ac) = (dm("alice", "bob"), dm("alice", "carol"));
    s.append(&[
        message("bob", &ab, "alice", T0, 1),
        message("bob", &ab, "alice", T0 + 1, 2),
        message("carol", &ac, "alice", T0 + 2, 3),
    ])
    .await
    .unwrap();
    let list = s.conversations(&user("alice"), 50).await.unwrap();
    let order: Vec<_> = list
        .iter()
        .map(|c| (c.conversation.clone(), c.unread))
        .collect();
    assert_eq!(order, vec![(ac.clone(), 1), (ab.clone(), 2)]);
    assert_eq!(list[0].last_from, user("carol"));
    assert_eq!(list[0].preview, "carol says 3");

    // Alice answers bob: his conversation moves up; her own message is not unread for her.
    let reply = message("alice", &ab, "bob", T0 + 3, 4);
    s.append(std::slice::from_ref(&reply)).await.unwrap();
    let list = s.conversations(&user("alice"), 50).await.unwrap();
    assert_eq!(list[0].conversation, ab);
    assert_eq!(list[0].unread, 2);
    let bobs = s.conversations(&user("bob"), 50).await.unwrap();
    assert_eq!((bobs.len(), bobs[0].unread), (1, 1));

    // Reading resets; a marker never moves back.
    s.mark_read(&user("alice"), &ab, reply.id).await.unwrap();
    s.mark_read(
        &user("alice"),
        &ab,
        MessageId(ulid::Ulid::from_parts(T0, 0)),
    )
    .await
    .unwrap();
    let list = s.conversations(&user("alice"), 50).await.unwrap();
    assert_eq!(
        (list[0].conversation.clone(), list[0].unread),
        (ab.clone(), 0)
    );
    assert_eq!(list[1].unread, 1);
    assert_eq!(
        s.conversations(&user("alice"), 1).await.unwrap().len(),
        1,
        "limit"
    );
}

pub async fn replaying_a_batch_leaves_one_copy<S: Store>(s: &S) {
    let all = chat(20);
    s.append(&all).await.unwrap();
    s.append(&all).await.unwrap();
    s.append(&all[5..10]).await.unwrap();
    let c = dm("alice", "bob");
    assert_eq!(s.page(&c, Page::Latest, 100).await.unwrap().len(), 20);
    let list = s.conversations(&user("alice"), 50).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].unread, 10, "bob's ten messages, counted once");
    assert_eq!(list[0].last_id, all[19].id);
}

pub async fn only_participants_and_members_can_read<S: Store>(s: &S) {
    let ab = dm("alice", "bob");
    assert!(s.can_read(&user("alice"), &ab).await.unwrap());
    assert!(!s.can_read(&user("mallory"), &ab).await.unwrap());
    let g = GroupId::new("club").unwrap();
    s.put_member(&g, &user("alice"), Role::Owner).await.unwrap();
    let c = ConversationId::group(&g);
    assert!(s.can_read(&user("alice"), &c).await.unwrap());
    assert!(!s.can_read(&user("mallory"), &c).await.unwrap());
    assert!(s.is_member(&g, &user("alice")).await.unwrap());
}

/// Defines one `#[tokio::test]` per suite case, each with a fresh store from `$make`.
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@case $make,
            append_and_read_back,
            latest_walks_back_across_day_buckets,
            scroll_back_has_no_gap_and_no_duplicate,
            catch_up_after_a_cursor,
            conversation_list_orders_by_activity_and_counts_unread,
            replaying_a_batch_leaves_one_copy,
            only_participants_and_members_can_read);
    };
    (@case $make:expr, $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::store::suite::$name(&store).await;
            }
        )*
    };
}
