//! Groups sharded like the messages: the chat instance routing partition `k` holds the groups
//! of partition `k` and the group lists of shard `k`'s users, and every other instance (and
//! history) asks it. With three chat instances each holds about a third of the memberships,
//! any instance serves an operation on any group, and a killed holder's groups are served
//! again by the survivors. A bucket of the layout of before is moved when chat starts.

use std::time::Duration;

use chat::GroupAdds;
use groups::{GroupRecord, MemberRecord};
use protocol::frames::ServerFrame;
use protocol::{ConversationId, ErrorCode, GroupId, GroupInfo, GroupOp, Role, subjects};
use testkit::client::Connection;
use testkit::{Stack, eventually, expect_answer, expect_post, expect_sent_or_error, fetch_history};

/// How long a takeover may take on a loaded 2-core machine (an instance's key lapses after
/// 6 s).
const RECOVERY: Duration = Duration::from_secs(45);

async fn op(conn: &mut Connection, qid: &str, op: GroupOp) -> GroupInfo {
    conn.group(qid, op).await.unwrap();
    match expect_answer(conn, qid).await {
        ServerFrame::Group { group, .. } => group,
        other => panic!("group operation {qid} failed: {other:?}"),
    }
}

async fn mine(conn: &mut Connection, qid: &str) -> Vec<GroupInfo> {
    let ask = GroupOp::Mine {
        after: None,
        limit: None,
    };
    conn.group(qid, ask).await.unwrap();
    match expect_answer(conn, qid).await {
        ServerFrame::Groups { groups, more, .. } => {
            assert!(!more);
            groups
        }
        other => panic!("mine failed: {other:?}"),
    }
}

async fn send(conn: &mut Connection, group: &GroupId, cid: &str) -> Result<(), ErrorCode> {
    conn.send_group(group.as_str(), cid, cid).await.unwrap();
    expect_sent_or_error(conn, cid).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_each_hold_a_share_of_the_groups_and_serve_any_of_them() {
    let mut stack = Stack::new()
        .chat_config(|c| c.group_adds = GroupAdds::Anyone)
        .start()
        .await;
    assert_eq!(stack.bus.partitions, 3);
    let config = stack.chat_config.clone();
    stack.start_chat(config.clone()).await;
    stack.start_chat(config).await;
    let routing = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_routing_partitions");
    let shards = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_session_shards_held");
    eventually(
        "each instance routes and holds one shard",
        RECOVERY,
        async || (0..3).all(|i| routing(&stack, i) == 1 && shards(&stack, i) == 1),
    )
    .await;

    let mut owner = stack.connect("owner", 0).await;
    let mut members = Vec::new();
    for m in ["m1", "m2", "m3", "m4"] {
        members.push(stack.connect(m, 0).await);
    }
    let names: Vec<String> = ["m1", "m2", "m3", "m4"].map(String::from).to_vec();
    // Groups until every shard has some (group ids are ULIDs: a few dozen at most).
    let shard_of = |g: &GroupId| subjects::group_shard(g, 3);
    let mut groups = Vec::new();
    let mut spread = std::collections::HashSet::new();
    while spread.len() < 3 || groups.len() < 6 {
        let g = groups.len();
        assert!(g < 60, "sixty group ids all fell in {spread:?}");
        let create = GroupOp::Create {
            name: format!("g{g}"),
            members: names.clone(),
        };
        let group = op(&mut owner, &format!("create-{g}"), create).await;
        assert_eq!((group.members, group.role), (5, Some(Role::Owner)));
        spread.insert(shard_of(&group.group));
        groups.push(group.group);
    }
    let total = 5 * groups.len() as u64;

    // Every group's messages reach every member, whichever instance routes it.
    for (g, group) in groups.iter().enumerate() {
        send(&mut owner, group, &format!("hello-{g}"))
            .await
            .unwrap();
        for member in &mut members {
            assert_eq!(expect_post(member).await.body, format!("hello-{g}"));
        }
    }
    // No instance holds every membership; together they hold them all.
    let held =
        |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_group_memberships_held");
    eventually(
        "the memberships are split among the instances",
        RECOVERY,
        async || {
            let held: Vec<u64> = (0..3).map(|i| held(&stack, i)).collect();
            held.iter().sum::<u64>() == total && held.iter().all(|n| *n < total)
        },
    )
    .await;

    // Lists and pages come from the shards' holders, whichever instance answers.
    for (i, member) in members.iter_mut().enumerate() {
        let listed = mine(member, &format!("mine-{i}")).await;
        let mut ids: Vec<GroupId> = listed.iter().map(|g| g.group.clone()).collect();
        ids.sort();
        let mut want = groups.clone();
        want.sort();
        assert_eq!(ids, want);
        assert!(
            listed
                .iter()
                .all(|g| g.members == 5 && g.role == Some(Role::Member))
        );
    }

    // A removal takes effect at once, on any instance: the removed member can neither post
    // nor read, and the others still get the group's messages.
    let first = groups[0].clone();
    let remove = GroupOp::Remove {
        group: first.to_string(),
        users: vec!["m1".into()],
    };
    let after = op(&mut owner, "remove", remove).await;
    assert_eq!(after.members, 4);
    assert_eq!(
        send(&mut members[0], &first, "after-removal").await,
        Err(ErrorCode::Forbidden)
    );
    let conversation = ConversationId::group(&first);
    assert_eq!(
        fetch_history(&mut members[0], "h-removed", &conversation)
            .await
            .err(),
        Some(ErrorCode::Forbidden)
    );
    let page = fetch_history(&mut members[1], "h-member", &conversation)
        .await
        .unwrap();
    assert!(page.iter().any(|m| m.body == "hello-0"));

    // An instance dies, holding a shard with some of the groups: they are served again. A
    // request that was on its way to the dead instance is answered "unavailable, retry", and
    // the client retries, as clients do.
    stack.chats[0].kill();
    for (g, group) in groups.iter().enumerate() {
        let mut tries = 0;
        let renamed = loop {
            tries += 1;
            let qid = format!("rename-{g}-{tries}");
            let rename = GroupOp::Rename {
                group: group.to_string(),
                name: format!("renamed-{g}"),
            };
            owner.group(&qid, rename).await.unwrap();
            match expect_answer(&mut owner, &qid).await {
                ServerFrame::Group { group, .. } => break group,
                ServerFrame::Error { code, .. } if code == ErrorCode::Unavailable && tries < 5 => {}
                other => panic!("rename {qid} failed: {other:?}"),
            }
        };
        assert_eq!(renamed.name, format!("renamed-{g}"));
    }
    send(&mut owner, &first, "after-takeover").await.unwrap();
    for member in &mut members[1..] {
        assert_eq!(expect_post(member).await.body, "after-takeover");
    }
}

#[tokio::test]
async fn groups_of_the_layout_before_sharding_are_moved_when_chat_starts() {
    let mut stack = Stack::new().start().await;
    stack.stop_services().await;
    // A bucket as natter wrote it before groups were sharded.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let bucket = js.get_key_value(subjects::GROUPS_BUCKET).await.unwrap();
    bucket.purge(subjects::GROUPS_LAYOUT_KEY).await.unwrap();
    let group = GroupId::new("01JOLDGROUP0000000000000000").unwrap();
    let record = GroupRecord {
        name: "old".into(),
        created_by: protocol::UserId::new("owner").unwrap(),
        created_ts: 1,
    };
    let json = serde_json::to_vec(&record).unwrap();
    bucket.put(group.as_str(), json.into()).await.unwrap();
    for (user, role) in [("owner", Role::Owner), ("m1", Role::Member)] {
        let member = MemberRecord { role, since: 1 };
        let key = format!("{group}.{user}");
        let json = serde_json::to_vec(&member).unwrap();
        bucket.put(key, json.into()).await.unwrap();
    }

    stack.start_services(1).await;
    let mut owner = stack.connect("owner", 0).await;
    let mut m1 = stack.connect("m1", 0).await;
    let listed = mine(&mut owner, "mine").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].group, listed[0].name.as_str(), listed[0].members),
        (&group, "old", 2)
    );
    send(&mut owner, &group, "still-here").await.unwrap();
    assert_eq!(expect_post(&mut m1).await.body, "still-here");

    // Only the sharded keys (and the mark saying so) are left.
    let mut keys = bucket.keys().await.unwrap();
    let mut left = Vec::new();
    while let Some(key) = futures::StreamExt::next(&mut keys).await {
        left.push(key.unwrap());
    }
    left.sort();
    let mut want = vec![
        subjects::GROUPS_LAYOUT_KEY.to_string(),
        subjects::group_key(&group, 3),
    ];
    for user in ["owner", "m1"] {
        let user = protocol::UserId::new(user).unwrap();
        want.push(subjects::member_key(&group, &user, 3));
        want.push(subjects::user_group_key(&user, &group, 3));
    }
    want.sort();
    assert_eq!(left, want);
}
