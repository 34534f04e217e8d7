//! The behavioural contract of a [`Store`], run against every implementation: the embedded
//! store in this crate's tests, and the ScyllaDB store against a real CQL server.
//! Each function takes an empty store.

use protocol::frames::{Change, Message};
use protocol::{ClientMsgId, ConversationId, GroupEvent, GroupId, MessageId, Role, UserId};

use super::{BUCKET_MS, Page, ReceiptMarkers, Store};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A message at `ts` (ms since the epoch); ids sort by `ts`, then by `seq`.
pub fn message(from: &str, conversation: &ConversationId, to: &str, ts: u64, seq: u64) -> Message {
    let id = MessageId(ulid::Ulid::from_parts(ts, seq as u128));
    Message {
        attachment: None,
        reacted: Vec::new(),
        reactions: Vec::new(),
        change: None,
        deleted: false,
        edited: None,
        id,
        conversation: conversation.clone(),
        from: user(from),
        to: user(to),
        cid: ClientMsgId::new(format!("c{ts}-{seq}")).unwrap(),
        body: format!("{from} says {seq}"),
        ts,
        cursor: None,
        event: None,
        state: None,
        reply: None,
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
    let list = s.conversations(&user("alice"), &[], 50).await.unwrap();
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
    let list = s.conversations(&user("alice"), &[], 50).await.unwrap();
    assert_eq!(list[0].conversation, ab);
    assert_eq!(list[0].unread, 2);
    let bobs = s.conversations(&user("bob"), &[], 50).await.unwrap();
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
    let list = s.conversations(&user("alice"), &[], 50).await.unwrap();
    assert_eq!(
        (list[0].conversation.clone(), list[0].unread),
        (ab.clone(), 0)
    );
    assert_eq!(list[1].unread, 1);
    assert_eq!(
        s.conversations(&user("alice"), &[], 1).await.unwrap().len(),
        1,
        "limit"
    );
}

/// The 1:1 list a replay starts from: every 1:1 conversation of the user with its newest
/// message, and no group.
pub async fn direct_conversations_list_each_partner_once_with_the_newest<S: Store>(s: &S) {
    let (ab, ac) = (dm("alice", "bob"), dm("alice", "carol"));
    let group = GroupId::new("g1").unwrap();
    let mut posted = message("alice", &ConversationId::group(&group), "g1", T0 + 5, 9);
    posted.to = user("g1");
    s.append(&[
        message("bob", &ab, "alice", T0, 1),
        message("alice", &ac, "carol", T0 + 2, 2),
        message("alice", &ab, "bob", T0 + 3, 3),
        posted,
    ])
    .await
    .unwrap();
    let mut list = s.direct_conversations(&user("alice")).await.unwrap();
    list.sort_by_key(|c| c.last_ts);
    let seen: Vec<_> = list
        .iter()
        .map(|c| (c.conversation.clone(), c.last_ts))
        .collect();
    assert_eq!(seen, vec![(ac, T0 + 2), (ab.clone(), T0 + 3)]);
    let bobs = s.direct_conversations(&user("bob")).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].conversation, ab);
    assert!(
        s.direct_conversations(&user("dave"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn replaying_a_batch_leaves_one_copy<S: Store>(s: &S) {
    let all = chat(20);
    s.append(&all).await.unwrap();
    s.append(&all).await.unwrap();
    s.append(&all[5..10]).await.unwrap();
    let c = dm("alice", "bob");
    assert_eq!(s.page(&c, Page::Latest, 100).await.unwrap().len(), 20);
    let list = s.conversations(&user("alice"), &[], 50).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].unread, 10, "bob's ten messages, counted once");
    assert_eq!(list[0].last_id, all[19].id);
}

fn group(name: &str) -> (GroupId, ConversationId) {
    let g = GroupId::new(name).unwrap();
    let c = ConversationId::group(&g);
    (g, c)
}

fn id_at(ts: u64, seq: u64) -> MessageId {
    MessageId(ulid::Ulid::from_parts(ts, seq as u128))
}

pub async fn group_events_survive_a_round_trip<S: Store>(s: &S) {
    let (g, c) = group("club");
    let mut created = message("alice", &c, "club", T0, 1);
    created.body = "alice created club".into();
    created.event = Some(GroupEvent::Created {
        name: "club".into(),
        members: vec![user("alice"), user("bob")],
    });
    let mut added = message("alice", &c, "club", T0 + 1, 2);
    added.event = Some(GroupEvent::Added {
        users: vec![user("carol")],
        role: Role::Admin,
    });
    let said = message("bob", &c, "club", T0 + 2, 3);
    s.append(&[created.clone(), added.clone(), said.clone()])
        .await
        .unwrap();

    let page = s.page(&c, Page::Latest, 10).await.unwrap();
    assert_eq!(page, vec![said.clone(), added.clone(), created.clone()]);
    assert_eq!(
        page[2].to,
        user(g.as_str()),
        "a group message is addressed to the group"
    );
    assert_eq!(s.message(&c, added.id).await.unwrap(), Some(added));
    assert_eq!(s.message(&c, said.id).await.unwrap(), Some(said));
    assert_eq!(s.message(&c, id_at(T0 + 5, 9)).await.unwrap(), None);

    let dm = message("alice", &dm("alice", "bob"), "bob", T0, 4);
    s.append(std::slice::from_ref(&dm)).await.unwrap();
    assert_eq!(s.message(&dm.conversation, dm.id).await.unwrap(), Some(dm));
    assert_eq!(
        s.message(&c, id_at(T0, 4)).await.unwrap(),
        None,
        "wrong conversation"
    );
}

pub async fn group_lists_need_no_per_member_rows<S: Store>(s: &S) {
    // A 1,000-member group: the store is never told who the members are.
    let (g, c) = group("everyone");
    let members: Vec<String> = (0..1000).map(|i| format!("m{i:04}")).collect();
    let mut created = message("m0000", &c, "everyone", T0, 0);
    created.event = Some(GroupEvent::Created {
        name: "everyone".into(),
        members: members.iter().map(|m| user(m)).collect(),
    });
    s.append(std::slice::from_ref(&created)).await.unwrap();

    // Just created: the system message alone puts it in every member's list.
    let last = members.last().unwrap().as_str();
    let list = s
        .conversations(&user(last), std::slice::from_ref(&g), 50)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].conversation.clone(), list[0].last_id),
        (c.clone(), created.id)
    );

    // Three messages from others across midnight, one of the reader's own, and a 1:1 chat.
    let midnight = (T0 / BUCKET_MS + 1) * BUCKET_MS;
    let said = [
        message("m0001", &c, "everyone", midnight - 10, 1),
        message("m0002", &c, "everyone", midnight + 10, 2),
        message(last, &c, "everyone", midnight + 20, 3),
        message("m0003", &c, "everyone", midnight + 30, 4),
    ];
    s.append(&said).await.unwrap();
    let direct = dm(last, "zed");
    s.append(&[message("zed", &direct, last, midnight, 5)])
        .await
        .unwrap();

    let list = s
        .conversations(&user(last), std::slice::from_ref(&g), 50)
        .await
        .unwrap();
    let entries: Vec<_> = list
        .iter()
        .map(|e| (e.conversation.clone(), e.unread))
        .collect();
    // Unread: the creation and three messages from others; not the reader's own.
    assert_eq!(entries, vec![(c.clone(), 4), (direct.clone(), 1)]);
    assert_eq!(list[0].last_from, user("m0003"));
    assert_eq!(list[0].preview, "m0003 says 4");

    s.mark_read(&user(last), &c, said[0].id).await.unwrap();
    let list = s
        .conversations(&user(last), std::slice::from_ref(&g), 1)
        .await
        .unwrap();
    assert_eq!(
        (list.len(), list[0].unread),
        (1, 2),
        "limit, and read up to the first"
    );

    // Another member's list has the group too; someone outside it (or removed) does not.
    let other = s
        .conversations(&user("m0500"), std::slice::from_ref(&g), 50)
        .await
        .unwrap();
    assert_eq!((other.len(), other[0].unread), (1, 5));
    assert!(
        s.conversations(&user("m0500"), &[], 50)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, quiet) = group("quiet");
    assert!(
        s.conversations(&user("m0500"), &[quiet.group_id().unwrap()], 50)
            .await
            .unwrap()
            .is_empty(),
        "a group without any message has no entry"
    );

    // A replay leaves the newest message where it is.
    s.append(&said[..2]).await.unwrap();
    let list = s
        .conversations(&user(last), std::slice::from_ref(&g), 50)
        .await
        .unwrap();
    assert_eq!((list[0].last_id, list[0].unread), (said[3].id, 2));
}

fn markers_of(all: &[ReceiptMarkers], who: &str) -> (Option<MessageId>, Option<MessageId>) {
    all.iter()
        .find(|m| m.user == user(who))
        .map(|m| (m.delivered, m.seen))
        .unwrap_or_default()
}

pub async fn replies_keep_their_quote<S: Store>(s: &S) {
    use protocol::frames::Quote;
    let ab = dm("alice", "bob");
    let asked = message("alice", &ab, "bob", T0, 1);
    let mut answer = message("bob", &ab, "alice", T0 + 1, 2);
    answer.reply = Some(Quote::of(&asked));
    let (_, c) = group("club");
    let said = message("alice", &c, "club", T0 + 2, 3);
    let mut echoed = message("carol", &c, "club", T0 + 3, 4);
    echoed.reply = Some(Quote::of(&said));
    s.append(&[asked.clone(), answer.clone(), said.clone(), echoed.clone()])
        .await
        .unwrap();
    assert_eq!(
        s.page(&ab, Page::Latest, 10).await.unwrap(),
        vec![answer.clone(), asked]
    );
    assert_eq!(
        s.page(&c, Page::Latest, 10).await.unwrap(),
        vec![echoed.clone(), said]
    );
    let quote = echoed.reply.as_ref().unwrap();
    assert_eq!(
        (quote.from.as_str(), quote.preview.as_str()),
        ("alice", "alice says 3")
    );
    assert_eq!(s.message(&ab, answer.id).await.unwrap(), Some(answer));
}

/// An edit or delete event of `target` by `from`, at `ts`.
fn change_of(
    target: &Message,
    from: &str,
    ts: u64,
    seq: u64,
    change: Change,
    body: &str,
) -> Message {
    let to = if target.conversation.is_direct() && target.from == user(from) {
        target.to.as_str()
    } else if target.conversation.is_direct() {
        target.from.as_str()
    } else {
        target.to.as_str()
    };
    let mut event = message(from, &target.conversation, to, ts, seq);
    event.change = Some(change);
    event.body = body.into();
    event
}

pub async fn edits_and_deletes_apply_once_in_order<S: Store>(s: &S) {
    let ab = dm("alice", "bob");
    let first = message("alice", &ab, "bob", T0, 1);
    let last = message("alice", &ab, "bob", T0 + 1, 2);
    s.append(&[first.clone(), last.clone()]).await.unwrap();
    let edit = |m: &Message, ts, seq, body| {
        change_of(m, "alice", ts, seq, Change::Edit { id: m.id }, body)
    };
    let (early, late) = (
        edit(&first, T0 + 10, 3, "fixed"),
        edit(&first, T0 + 20, 4, "fixed again"),
    );
    s.append(&[early.clone(), late.clone()]).await.unwrap();
    // A replay of the message, and of the earlier edit, changes nothing.
    s.append(&[first.clone(), early.clone()]).await.unwrap();
    let page = s.page(&ab, Page::Latest, 10).await.unwrap();
    assert_eq!(
        ids(&page),
        vec![last.id, first.id],
        "events are no messages of a page"
    );
    assert_eq!(
        (page[1].body.as_str(), page[1].edited),
        ("fixed again", Some(T0 + 20))
    );
    assert_eq!(
        s.message(&ab, first.id).await.unwrap().unwrap().body,
        "fixed again"
    );
    // The newest message's edit shows in both lists; any change counts as activity.
    s.append(&[edit(&last, T0 + 30, 5, "newest, edited")])
        .await
        .unwrap();
    for who in ["alice", "bob"] {
        let listed = s.conversations(&user(who), &[], 10).await.unwrap();
        assert_eq!(
            (listed[0].preview.as_str(), listed[0].last_ts),
            ("newest, edited", T0 + 1)
        );
        let active = s.direct_conversations(&user(who)).await.unwrap();
        assert_eq!(
            active[0].last_ts,
            T0 + 30,
            "{who}: the edit is activity to replay"
        );
    }
    let delete = change_of(
        &last,
        "alice",
        T0 + 40,
        6,
        Change::Delete { id: last.id },
        "alice deleted a message",
    );
    s.append(std::slice::from_ref(&delete)).await.unwrap();
    // Neither an edit after the delete nor a replay brings the text back.
    s.append(&[edit(&last, T0 + 50, 7, "resurrected"), last.clone(), delete])
        .await
        .unwrap();
    let gone = s.message(&ab, last.id).await.unwrap().unwrap();
    assert!(
        gone.deleted && gone.body.is_empty() && gone.reply.is_none(),
        "{gone:?}"
    );
    let listed = s.conversations(&user("bob"), &[], 10).await.unwrap();
    assert!(
        listed[0].deleted && listed[0].preview.is_empty(),
        "{listed:?}"
    );
    assert_eq!(listed[0].unread, 2, "events are not unread messages");

    let (g, c) = group("editors");
    let said = message("carol", &c, "editors", T0 + 60, 8);
    s.append(std::slice::from_ref(&said)).await.unwrap();
    let by_admin = change_of(
        &said,
        "dave",
        T0 + 70,
        9,
        Change::Delete { id: said.id },
        "dave deleted a message",
    );
    s.append(&[by_admin]).await.unwrap();
    let page = s.page(&c, Page::Latest, 10).await.unwrap();
    assert!(
        page.len() == 1 && page[0].deleted && page[0].body.is_empty(),
        "{page:?}"
    );
    let listed = s.conversations(&user("carol"), &[g], 10).await.unwrap();
    assert!(
        listed.iter().any(|e| e.conversation == c && e.deleted),
        "{listed:?}"
    );
}

pub async fn reactions_keep_one_per_user_and_the_newest<S: Store>(s: &S) {
    let ab = dm("alice", "bob");
    let asked = message("alice", &ab, "bob", T0, 1);
    s.append(std::slice::from_ref(&asked)).await.unwrap();
    let react = |from: &str, ts, seq, emoji: &str| {
        let change = Change::React {
            id: asked.id,
            emoji: emoji.into(),
            replaces: String::new(),
        };
        change_of(&asked, from, ts, seq, change, "")
    };
    let counts = async |asker: &str| {
        let mut m = s.message(&ab, asked.id).await.unwrap().unwrap();
        m.count_reactions(&user(asker));
        m.reactions
            .iter()
            .map(|r| (r.emoji.clone(), r.count, r.mine))
            .collect::<Vec<_>>()
    };
    let (first, changed) = (
        react("bob", T0 + 10, 2, "👍"),
        react("bob", T0 + 30, 4, "❤"),
    );
    s.append(&[first.clone(), react("alice", T0 + 20, 3, "👍"), changed])
        .await
        .unwrap();
    // A replay of bob's first reaction does not bring it back.
    s.append(std::slice::from_ref(&first)).await.unwrap();
    assert_eq!(
        counts("bob").await,
        vec![("❤".into(), 1, true), ("👍".into(), 1, false)]
    );
    let active = s.direct_conversations(&user("bob")).await.unwrap();
    assert_eq!(
        active[0].last_ts,
        T0 + 30,
        "a reaction is activity to replay"
    );
    s.append(&[react("alice", T0 + 40, 5, "")]).await.unwrap();
    assert_eq!(counts("alice").await, vec![("❤".into(), 1, false)]);
    let page = s.page(&ab, Page::Latest, 10).await.unwrap();
    assert_eq!(page.len(), 1, "reactions are no messages of a page");
}

pub async fn group_markers_only_move_forward<S: Store>(s: &S) {
    let (g, c) = group("crew");
    let (id3, id5, id6) = (id_at(T0 + 3, 3), id_at(T0 + 5, 5), id_at(T0 + 6, 6));
    let alice = user("alice");

    s.mark_delivered(&alice, &c, id5).await.unwrap();
    s.mark_delivered(&alice, &c, id3).await.unwrap();
    s.mark_delivered(&alice, &c, id5).await.unwrap();
    assert_eq!(
        markers_of(&s.group_markers(&g).await.unwrap(), "alice"),
        (Some(id5), None)
    );

    s.mark_read(&alice, &c, id3).await.unwrap();
    s.mark_read(&alice, &c, id3).await.unwrap();
    assert_eq!(
        markers_of(&s.group_markers(&g).await.unwrap(), "alice"),
        (Some(id5), Some(id3)),
        "reading does not pull delivered back"
    );
    s.mark_read(&alice, &c, id6).await.unwrap();
    s.mark_read(&alice, &c, id5).await.unwrap();
    assert_eq!(
        markers_of(&s.group_markers(&g).await.unwrap(), "alice"),
        (Some(id6), Some(id6)),
        "seen implies delivered"
    );
    assert_eq!(s.read_marker(&alice, &c).await.unwrap(), Some(id6));
    assert_eq!(s.read_marker(&user("bob"), &c).await.unwrap(), None);

    // 1:1 markers are kept apart from groups'; other groups are apart too.
    let ab = dm("alice", "bob");
    s.mark_delivered(&alice, &ab, id5).await.unwrap();
    s.mark_read(&alice, &ab, id3).await.unwrap();
    assert_eq!(s.read_marker(&alice, &ab).await.unwrap(), Some(id3));
    assert_eq!(s.group_markers(&g).await.unwrap().len(), 1);
    let mine = s.receipt_markers(&alice, &c).await.unwrap();
    assert_eq!((mine.delivered, mine.seen), (Some(id6), Some(id6)));
    let (other, _) = group("other");
    assert!(s.group_markers(&other).await.unwrap().is_empty());
}

pub async fn direct_markers_only_move_forward<S: Store>(s: &S) {
    let ab = dm("alice", "bob");
    let (id3, id5, id6) = (id_at(T0 + 3, 3), id_at(T0 + 5, 5), id_at(T0 + 6, 6));
    let (alice, bob) = (user("alice"), user("bob"));
    let markers = async |u: &UserId| {
        let m = s.receipt_markers(u, &ab).await.unwrap();
        (m.delivered, m.seen)
    };
    assert_eq!(markers(&bob).await, (None, None));

    s.mark_delivered(&bob, &ab, id5).await.unwrap();
    s.mark_delivered(&bob, &ab, id3).await.unwrap();
    assert_eq!(markers(&bob).await, (Some(id5), None), "never back");
    s.mark_read(&bob, &ab, id3).await.unwrap();
    assert_eq!(markers(&bob).await, (Some(id5), Some(id3)));
    s.mark_read(&bob, &ab, id6).await.unwrap();
    assert_eq!(
        markers(&bob).await,
        (Some(id6), Some(id6)),
        "seen implies delivered"
    );
    // Each user's own, and groups apart.
    assert_eq!(markers(&alice).await, (None, None));
    let (g, _) = group("crew");
    assert!(s.group_markers(&g).await.unwrap().is_empty());
}

pub async fn group_markers_count_who_received_and_read<S: Store>(s: &S) {
    let (g, c) = group("forty");
    let id = id_at(T0 + 10, 10);
    let (before, after) = (id_at(T0 + 5, 5), id_at(T0 + 20, 20));
    // Members 0-9 received it, 10-19 also read it, 20-29 read further, 30-39 only older.
    for i in 0..40u32 {
        let u = user(&format!("u{i:02}"));
        match i / 10 {
            0 => s.mark_delivered(&u, &c, id).await.unwrap(),
            1 => s.mark_read(&u, &c, id).await.unwrap(),
            2 => s.mark_read(&u, &c, after).await.unwrap(),
            _ => s.mark_delivered(&u, &c, before).await.unwrap(),
        }
    }
    let all = s.group_markers(&g).await.unwrap();
    assert_eq!(all.len(), 40);
    let delivered = all.iter().filter(|m| m.delivered >= Some(id)).count();
    let seen = all.iter().filter(|m| m.seen >= Some(id)).count();
    assert_eq!((delivered, seen), (30, 20));
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
            direct_conversations_list_each_partner_once_with_the_newest,
            replaying_a_batch_leaves_one_copy,
            group_events_survive_a_round_trip,
            replies_keep_their_quote,
            edits_and_deletes_apply_once_in_order,
            reactions_keep_one_per_user_and_the_newest,
            group_lists_need_no_per_member_rows,
            group_markers_only_move_forward,
            direct_markers_only_move_forward,
            group_markers_count_who_received_and_read);
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
