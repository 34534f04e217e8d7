//! End-to-end tests of group chats against a real nats-server, three gateways and the chat and
//! history services: fan-out with one publish per gateway, catch-up of offline members,
//! authorisation, removal, roles and limits, system events, large groups.

use chat::GroupAdds;
use protocol::frames::{ClientFrame, Message, ServerFrame};
use protocol::{Cursor, ErrorCode, GroupEvent, GroupInfo, GroupOp, MessageId, Role};
use testkit::client::Connection;
use testkit::{
    Stack, expect_answer, expect_delivered, expect_message, expect_post, expect_seen,
    expect_sent_or_error, expect_synced, fetch_history,
};

/// Runs a group operation and returns the group it answers with; panics on an error.
async fn op(conn: &mut Connection, qid: &str, op: GroupOp) -> GroupInfo {
    conn.group(qid, op).await.unwrap();
    match expect_answer(conn, qid).await {
        ServerFrame::Group { group, .. } => group,
        other => panic!("group operation {qid} failed: {other:?}"),
    }
}

/// Runs a group operation that must be refused, and returns the error code.
async fn refused(conn: &mut Connection, qid: &str, op: GroupOp) -> ErrorCode {
    conn.group(qid, op).await.unwrap();
    match expect_answer(conn, qid).await {
        ServerFrame::Error { code, .. } => code,
        other => panic!("expected {qid} to be refused, got {other:?}"),
    }
}

/// Sends to a group and waits for `sent` (or the error answering it).
async fn send(
    conn: &mut Connection,
    group: &GroupInfo,
    cid: &str,
    body: &str,
) -> Result<MessageId, ErrorCode> {
    conn.send_group(group.group.as_str(), cid, body)
        .await
        .unwrap();
    expect_sent_or_error(conn, cid).await.map(|sent| sent.id)
}

fn user(i: usize) -> String {
    format!("u{i:03}")
}

#[tokio::test]
async fn a_group_message_reaches_every_online_member_once_with_one_publish_per_gateway() {
    // 499 members who never messaged the owner: adds from anyone.
    let stack = Stack::new()
        .gateways(3)
        .chat_config(|c| c.group_adds = GroupAdds::Anyone)
        .start()
        .await;
    let mut owner = stack.connect(&user(0), 0).await;
    let members: Vec<String> = (1..500).map(user).collect();
    let group = op(
        &mut owner,
        "create",
        GroupOp::Create {
            name: "Five hundred".into(),
            members,
        },
    )
    .await;
    assert_eq!(
        (group.members, group.role, group.large),
        (500, Some(Role::Owner), false)
    );

    // Where the stream stands before the message: the offline members' devices resume from
    // here.
    let mut probe = stack.resume(&user(499), 2, None).await;
    expect_synced(&mut probe).await;
    let before: Cursor = probe.cursor().expect("synced gives a cursor");
    probe.close().await;

    // 200 members online, spread over the three gateways (the owner is one of them).
    let mut online = Vec::new();
    for i in 1..200 {
        online.push(stack.connect(&user(i), i % 3).await);
    }
    let publishes = stack.chats[0].metric("natter_chat_message_publishes_total");

    let id = send(&mut owner, &group, "hello", "hello everyone")
        .await
        .unwrap();
    for conn in &mut online {
        let m = expect_message(conn).await;
        assert_eq!((m.id, m.body.as_str()), (id, "hello everyone"));
    }
    assert_eq!(
        stack.chats[0].metric("natter_chat_message_publishes_total") - publishes,
        3,
        "one publish per gateway, not one per member"
    );
    // Exactly once: the next message each member gets is the next one sent.
    let next = send(&mut owner, &group, "next", "second").await.unwrap();
    for conn in &mut online {
        assert_eq!(
            expect_message(conn).await.id,
            next,
            "no duplicate of the first"
        );
    }

    // The 300 offline members get both when they connect, from their devices' cursor.
    for i in 200..500 {
        let mut conn = stack.resume(&user(i), i % 3, Some(before.clone())).await;
        let (messages, synced) = expect_synced(&mut conn).await;
        assert!(synced.recovered && synced.history.is_empty());
        let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, [id, next], "{}", user(i));
        conn.close().await;
    }
}

#[tokio::test]
async fn only_members_post_and_read_and_a_removed_member_stops_receiving_at_once() {
    let stack = Stack::new().gateways(2).start().await;
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;
    let mut carol = stack.connect("carol", 1).await;
    let mut mallory = stack.connect("mallory", 0).await;
    let group = op(
        &mut alice,
        "create",
        GroupOp::Create {
            name: "Team".into(),
            members: vec!["bob".into(), "carol".into()],
        },
    )
    .await;
    let c = group.conversation.clone();

    // A stranger can neither post, nor read, nor look inside.
    assert_eq!(
        send(&mut mallory, &group, "m1", "let me in").await,
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        fetch_history(&mut mallory, "h1", &c).await.err(),
        Some(ErrorCode::Forbidden)
    );
    let info = GroupOp::Info {
        group: group.group.to_string(),
    };
    assert_eq!(
        refused(&mut mallory, "i1", info).await,
        ErrorCode::Forbidden
    );
    let join = GroupOp::Add {
        group: group.group.to_string(),
        users: vec!["mallory".into()],
        role: None,
    };
    assert_eq!(
        refused(&mut mallory, "a1", join).await,
        ErrorCode::Forbidden
    );

    // Members read the conversation, system events included.
    let first = send(&mut bob, &group, "b1", "hi team").await.unwrap();
    assert_eq!(expect_post(&mut carol).await.id, first);
    // History is written asynchronously, within milliseconds of `sent`.
    let mut seen = Vec::new();
    let mut tries = 0;
    while seen.last().map(|m: &Message| m.id) != Some(first) {
        tries += 1;
        assert!(tries < 500, "the message never reached history");
        seen = fetch_history(&mut bob, &format!("h2-{tries}"), &c)
            .await
            .unwrap();
    }
    assert!(
        matches!(seen[0].event, Some(GroupEvent::Created { .. })),
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap().id, first);

    // Carol is removed: she hears of it, and of nothing sent after.
    op(
        &mut alice,
        "remove",
        GroupOp::Remove {
            group: group.group.to_string(),
            users: vec!["carol".into()],
        },
    )
    .await;
    let removal = expect_message(&mut carol).await;
    assert_eq!(
        removal.event,
        Some(GroupEvent::Removed {
            users: vec![protocol::UserId::new("carol").unwrap()]
        })
    );
    let after = send(&mut alice, &group, "a2", "carol is gone")
        .await
        .unwrap();
    assert_eq!(expect_message(&mut bob).await.event, removal.event);
    assert_eq!(expect_message(&mut bob).await.id, after);
    // A 1:1 message sent after the group message reaches carol first: the group message
    // never came (routing keeps stream order per gateway).
    alice.send("carol", "dm1", "still friends").await.unwrap();
    let next = expect_message(&mut carol).await;
    assert_eq!(next.body, "still friends");

    // Nor can she post or read any more (decision: history is for current members only).
    assert_eq!(
        send(&mut carol, &group, "c1", "wait").await,
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        fetch_history(&mut carol, "h3", &c).await.err(),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn roles_decide_who_manages_and_the_member_limit_holds() {
    let stack = Stack::new()
        .chat_config(|c| c.max_group_members = 4)
        .start()
        .await;
    stack.make_contacts("alice", &["bob"]).await;
    stack.make_contacts("bob", &["carol", "dave", "erin"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let group = op(
        &mut alice,
        "create",
        GroupOp::Create {
            name: "Small".into(),
            members: vec!["bob".into()],
        },
    )
    .await;
    let g = group.group.to_string();
    let add = |users: &[&str], role| GroupOp::Add {
        group: g.clone(),
        users: users.iter().map(|u| u.to_string()).collect(),
        role,
    };

    // A plain member manages nothing.
    assert_eq!(
        refused(&mut bob, "b1", add(&["carol"], None)).await,
        ErrorCode::Forbidden
    );
    let rename = GroupOp::Rename {
        group: g.clone(),
        name: "Mine".into(),
    };
    assert_eq!(refused(&mut bob, "b2", rename).await, ErrorCode::Forbidden);

    // The owner makes bob an admin; an admin adds members but not admins, and cannot remove
    // the owner.
    let promote = GroupOp::SetRole {
        group: g.clone(),
        member: "bob".into(),
        role: Role::Admin,
    };
    op(&mut alice, "a1", promote).await;
    let info = op(&mut bob, "b3", add(&["carol"], None)).await;
    assert_eq!((info.members, info.role), (3, Some(Role::Admin)));
    assert_eq!(
        refused(&mut bob, "b4", add(&["dave"], Some(Role::Admin))).await,
        ErrorCode::Forbidden
    );
    let oust = GroupOp::Remove {
        group: g.clone(),
        users: vec!["alice".into()],
    };
    assert_eq!(refused(&mut bob, "b5", oust).await, ErrorCode::Forbidden);

    // Four is the limit.
    assert_eq!(
        refused(&mut bob, "b6", add(&["dave", "erin"], None)).await,
        ErrorCode::GroupFull
    );
    assert_eq!(op(&mut bob, "b7", add(&["dave"], None)).await.members, 4);

    // The owner leaves: the admin becomes owner; the group lists and members follow.
    let left = op(&mut alice, "a2", GroupOp::Leave { group: g.clone() }).await;
    assert_eq!(left.role, None);
    bob.group(
        "b8",
        GroupOp::Members {
            group: g.clone(),
            after: None,
            limit: Some(2),
        },
    )
    .await
    .unwrap();
    let ServerFrame::GroupMembers { members, more, .. } = expect_answer(&mut bob, "b8").await
    else {
        panic!("members")
    };
    assert!(more);
    assert_eq!(
        (members[0].user.as_str(), members[0].role),
        ("bob", Role::Owner)
    );
    bob.group(
        "b9",
        GroupOp::Mine {
            after: None,
            limit: None,
        },
    )
    .await
    .unwrap();
    let ServerFrame::Groups { groups, .. } = expect_answer(&mut bob, "b9").await else {
        panic!("mine")
    };
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].members, groups[0].role), (3, Some(Role::Owner)));
    alice
        .group(
            "a3",
            GroupOp::Mine {
                after: None,
                limit: None,
            },
        )
        .await
        .unwrap();
    let ServerFrame::Groups { groups, .. } = expect_answer(&mut alice, "a3").await else {
        panic!("mine")
    };
    assert!(groups.is_empty());

    // Garbage is refused with a reason, not a crash.
    let bad = GroupOp::Add {
        group: "no.such".into(),
        users: vec![],
        role: None,
    };
    assert_eq!(refused(&mut bob, "b10", bad).await, ErrorCode::InvalidId);
    let unknown = GroupOp::Info {
        group: "nosuchgroup".into(),
    };
    assert_eq!(refused(&mut bob, "b11", unknown).await, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_large_group_is_left_to_history_when_a_member_catches_up() {
    let stack = Stack::new()
        .chat_config(|c| c.large_group_members = 2)
        .start()
        .await;
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let small = op(
        &mut alice,
        "small",
        GroupOp::Create {
            name: "Pair".into(),
            members: vec!["bob".into()],
        },
    )
    .await;
    let large = op(
        &mut alice,
        "large",
        GroupOp::Create {
            name: "Crowd".into(),
            members: vec!["bob".into(), "carol".into()],
        },
    )
    .await;
    assert!(!small.large && large.large);

    let mut bob = stack.resume("bob", 0, None).await;
    expect_synced(&mut bob).await;
    let cursor = bob.cursor().unwrap();
    bob.close().await;

    let in_small = send(&mut alice, &small, "s1", "to the pair").await.unwrap();
    let in_large = send(&mut alice, &large, "l1", "to the crowd")
        .await
        .unwrap();

    let mut bob = stack.resume("bob", 0, Some(cursor)).await;
    let (messages, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    assert_eq!(
        messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [in_small]
    );
    assert_eq!(synced.history, std::slice::from_ref(&large.conversation));
    let fetched = fetch_history(&mut bob, "h", &large.conversation)
        .await
        .unwrap();
    assert_eq!(fetched.last().unwrap().id, in_large);
}

#[tokio::test]
async fn a_group_of_ten_thousand_members_fans_out_and_pages() {
    let stack = Stack::new()
        .gateways(2)
        .chat_config(|c| {
            c.max_group_members = 20_000;
            c.large_group_members = 5_000;
            c.group_adds = GroupAdds::Anyone;
        })
        .start()
        .await;
    let name = |i: usize| format!("t{i:05}");
    let mut owner = stack.connect(&name(0), 0).await;
    let group = op(
        &mut owner,
        "create",
        GroupOp::Create {
            name: "Ten thousand".into(),
            members: (1..1000).map(name).collect(),
        },
    )
    .await;
    for chunk in 1..10 {
        let users = (chunk * 1000..(chunk + 1) * 1000).map(name).collect();
        let add = GroupOp::Add {
            group: group.group.to_string(),
            users,
            role: None,
        };
        op(&mut owner, &format!("add{chunk}"), add).await;
    }
    let info = op(
        &mut owner,
        "info",
        GroupOp::Info {
            group: group.group.to_string(),
        },
    )
    .await;
    assert_eq!((info.members, info.large), (10_000, true));

    // Every member, once, across pages of 1,000.
    let mut seen = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let qid = format!("page{}", seen.len());
        owner
            .group(
                &qid,
                GroupOp::Members {
                    group: group.group.to_string(),
                    after: after.clone(),
                    limit: Some(1000),
                },
            )
            .await
            .unwrap();
        let ServerFrame::GroupMembers { members, more, .. } = expect_answer(&mut owner, &qid).await
        else {
            panic!("members page")
        };
        after = members.last().map(|m| m.user.to_string());
        seen.extend(members.into_iter().map(|m| m.user));
        if !more {
            break;
        }
    }
    assert_eq!(seen.len(), 10_000);

    // 40 members online on two gateways: one message, two publishes.
    let mut online = Vec::new();
    for i in 9_960..10_000 {
        online.push(stack.connect(&name(i), i % 2).await);
    }
    let publishes = stack.chats[0].metric("natter_chat_message_publishes_total");
    let id = send(&mut owner, &group, "big", "hello, crowd")
        .await
        .unwrap();
    for conn in &mut online {
        assert_eq!(expect_message(conn).await.id, id);
    }
    assert_eq!(
        stack.chats[0].metric("natter_chat_message_publishes_total") - publishes,
        2
    );
}

/// The answer to a `receipts` query: (recipients, delivered, seen, delivered_by, seen_by).
async fn receipts(
    conn: &mut Connection,
    qid: &str,
    group: &GroupInfo,
    id: MessageId,
) -> Result<(u32, u32, u32, Vec<String>, Vec<String>), ErrorCode> {
    conn.send_frame(&ClientFrame::Receipts {
        qid: qid.into(),
        conversation: group.conversation.to_string(),
        id: id.to_string(),
    })
    .await
    .unwrap();
    let names = |users: &Option<Vec<protocol::UserId>>| {
        let mut names: Vec<String> = users.iter().flatten().map(|u| u.to_string()).collect();
        names.sort();
        names
    };
    match expect_answer(conn, qid).await {
        ServerFrame::Receipts {
            recipients,
            delivered,
            seen,
            delivered_by,
            seen_by,
            ..
        } => Ok((
            recipients,
            delivered,
            seen,
            names(&delivered_by),
            names(&seen_by),
        )),
        ServerFrame::Error { code, .. } => Err(code),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn the_sender_sees_who_received_and_read_a_group_message() {
    let stack = Stack::new().gateways(2).start().await;
    stack
        .make_contacts("alice", &["bob", "carol", "dave"])
        .await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;
    let mut carol = stack.connect("carol", 0).await;
    let mut dave = stack.connect("dave", 1).await;
    let mut mallory = stack.connect("mallory", 1).await;
    let group = op(
        &mut alice,
        "create",
        GroupOp::Create {
            name: "Receipts".into(),
            members: vec!["bob".into(), "carol".into(), "dave".into()],
        },
    )
    .await;
    let id = send(&mut alice, &group, "m1", "did you get this?")
        .await
        .unwrap();
    let c = group.conversation.clone();
    for member in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(expect_post(member).await.id, id);
    }

    // Bob's device has it: alice is told, and the counts say so.
    bob.ack(&c, id).await.unwrap();
    let (delivered, by) = expect_delivered(&mut alice).await;
    assert_eq!((delivered, by.as_str()), (id, "bob"));
    let bob_only = (3, 1, 0, vec!["bob".to_string()], vec![]);
    assert_eq!(receipts(&mut alice, "r1", &group, id).await, Ok(bob_only));

    // Carol reads it (reading implies receiving).
    carol.read(&c, id).await.unwrap();
    let (up_to, by) = expect_seen(&mut alice).await;
    assert_eq!((up_to, by.as_str()), (id, "carol"));
    let counts = receipts(&mut alice, "r2", &group, id).await.unwrap();
    assert_eq!(
        counts,
        (
            3,
            2,
            1,
            vec!["bob".to_string(), "carol".to_string()],
            vec!["carol".to_string()]
        )
    );

    // Dave acknowledges and reads; every member has it now.
    dave.ack(&c, id).await.unwrap();
    dave.read(&c, id).await.unwrap();
    let (_, by) = expect_seen(&mut alice).await;
    assert_eq!(by.as_str(), "dave");
    let (recipients, delivered, seen, _, _) = receipts(&mut alice, "r3", &group, id).await.unwrap();
    assert_eq!((recipients, delivered, seen), (3, 3, 2));

    // Outsiders learn nothing.
    assert_eq!(
        receipts(&mut mallory, "r4", &group, id).await,
        Err(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn nobody_can_be_buried_under_groups() {
    let stack = Stack::new()
        .chat_config(|c| {
            c.max_groups_per_user = 2;
            c.group_adds = GroupAdds::Anyone;
        })
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    let mut mallory = stack.connect("mallory", 0).await;
    let create = |name: &str, members: &[&str]| GroupOp::Create {
        name: name.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    op(&mut alice, "g1", create("One", &["bob"])).await;
    let two = op(&mut mallory, "g2", create("Two", &["bob"])).await;

    // bob is in two groups: mallory can neither create a third with him nor add him to one.
    assert_eq!(
        refused(&mut mallory, "g3", create("Three", &["bob"])).await,
        ErrorCode::TooManyGroups
    );
    let three = op(&mut mallory, "g4", create("Four", &["carol"])).await;
    let add = GroupOp::Add {
        group: three.group.to_string(),
        users: vec!["bob".into()],
        role: None,
    };
    assert_eq!(
        refused(&mut mallory, "g5", add).await,
        ErrorCode::TooManyGroups
    );
    // mallory has reached the limit herself.
    assert_eq!(
        refused(&mut mallory, "g6", create("Five", &[])).await,
        ErrorCode::TooManyGroups
    );
    // Leaving makes room again.
    let leave = GroupOp::Leave {
        group: two.group.to_string(),
    };
    op(&mut mallory, "g7", leave).await;
    op(&mut alice, "g8", create("Six", &["mallory"])).await;
}

#[tokio::test]
async fn only_contacts_add_a_user_to_groups() {
    let stack = Stack::new().start().await;
    stack.make_contacts("mallory", &["carol"]).await;
    let mut mallory = stack.connect("mallory", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let mut carol = stack.connect("carol", 0).await;
    let create = |members: &[&str]| GroupOp::Create {
        name: "Offers".into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };

    // bob never exchanged a message with mallory: the whole operation is refused, naming
    // him, so carol (a contact) is not added either.
    mallory
        .group("c1", create(&["carol", "bob"]))
        .await
        .unwrap();
    let ServerFrame::Error { code, reason, .. } = expect_answer(&mut mallory, "c1").await else {
        panic!("a stranger was added")
    };
    assert_eq!(code, ErrorCode::NotAContact);
    assert!(reason.starts_with("bob can be added only by"), "{reason}");
    let group = op(&mut mallory, "c2", create(&["carol"])).await;
    let add = GroupOp::Add {
        group: group.group.to_string(),
        users: vec!["bob".into()],
        role: None,
    };
    assert_eq!(
        refused(&mut mallory, "a1", add.clone()).await,
        ErrorCode::NotAContact
    );
    for (conn, expected) in [(&mut bob, 0), (&mut carol, 1)] {
        let mine = GroupOp::Mine {
            after: None,
            limit: None,
        };
        conn.group("m1", mine).await.unwrap();
        let ServerFrame::Groups { groups, .. } = expect_answer(conn, "m1").await else {
            panic!("mine")
        };
        assert_eq!(groups.len(), expected);
    }

    // Once bob has written to her, she may add him: right after his `sent`, before the
    // history writer may have stored it (chat waits for the writer before it says no).
    bob.send("mallory", "hello", "hi mallory").await.unwrap();
    testkit::expect_sent(&mut bob, "hello").await;
    assert_eq!(op(&mut mallory, "a2", add).await.members, 3);
}

#[tokio::test]
async fn a_user_in_two_thousand_groups_pages_through_them_and_still_resumes() {
    const GROUPS: usize = 2_000;
    const OWNERS: usize = 8;
    let stack = Stack::new()
        .chat_config(|c| {
            c.max_groups_per_user = GROUPS;
            c.group_adds = GroupAdds::Anyone;
        })
        .start()
        .await;
    // Names of 100 four-byte characters: one answer listing all of bob's groups would be
    // over 1 MiB, NATS's largest message.
    let name: String = std::iter::repeat_n('\u{1D11E}', 100).collect();
    let created = futures::future::join_all((0..OWNERS).map(|o| {
        let (stack, name) = (&stack, name.clone());
        async move {
            let mut owner = stack.connect(&format!("owner{o}"), 0).await;
            let mut groups = Vec::new();
            for i in 0..GROUPS / OWNERS {
                let create = GroupOp::Create {
                    name: name.clone(),
                    members: vec!["bob".into()],
                };
                groups.push(op(&mut owner, &format!("g{i}"), create).await);
            }
            (owner, groups)
        }
    }))
    .await;

    // bob lists them all, a page at a time.
    let mut bob = stack.connect("bob", 0).await;
    let mut listed = std::collections::BTreeSet::new();
    let mut after = None;
    for page in 0.. {
        let qid = format!("mine{page}");
        bob.group(&qid, GroupOp::Mine { after, limit: None })
            .await
            .unwrap();
        let ServerFrame::Groups { groups, more, .. } = expect_answer(&mut bob, &qid).await else {
            panic!("mine refused")
        };
        assert!(!groups.is_empty() && groups.len() <= 200);
        after = groups.last().map(|g| g.group.to_string());
        listed.extend(groups.into_iter().map(|g| g.group));
        if !more {
            break;
        }
    }
    assert_eq!(listed.len(), GROUPS, "every group once");
    let mut probe = stack.resume("bob", 0, None).await;
    expect_synced(&mut probe).await;
    let cursor = probe.cursor().expect("synced gives a cursor");
    probe.close().await;
    bob.close().await;

    // A message bob missed, in the last group created, is replayed when he resumes.
    let (mut owner, groups) = created.into_iter().last().unwrap();
    let missed = send(&mut owner, groups.last().unwrap(), "m", "you missed this")
        .await
        .unwrap();
    let mut bob = stack.resume("bob", 0, Some(cursor)).await;
    let (messages, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered, "{synced:?}");
    assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [missed]);
}
