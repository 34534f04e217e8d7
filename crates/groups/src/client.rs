//! Questions about groups, wherever their shard is held: the view of a shard held by this
//! instance answers in memory; any other shard's holder (the chat instance routing that
//! partition) is asked on `natter.chat.groups.<k>`, again while nobody answers (a shard being
//! handed over), and [`serve_shard`] is that holder's side. Memberships that decide
//! authorisation are read from the bucket itself when not held here, so they are exact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use protocol::payloads::{GroupFacts, GroupsAnswer, GroupsAsk, GroupsQuery};
use protocol::{GroupId, Member, Role, UserId, subjects};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::records::membership;
use crate::view::GroupView;

/// How long one request to a shard's holder may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before asking again when no instance holds the shard.
const ASK_RETRY: Duration = Duration::from_millis(50);
/// How long a question is asked again while nobody answers, before it fails: longer than a
/// hand-over, and than a crashed holder's key takes to lapse (6 s) and its shards to be
/// taken by the survivors.
const PATIENCE: Duration = Duration::from_secs(8);
/// How long nobody may answer for a shard before a chat instance takes it itself.
const ORPHANED_AFTER: Duration = Duration::from_secs(1);
/// How long a holder waits for its view to reach the revision a question names.
const REACH_PATIENCE: Duration = Duration::from_secs(2);

/// The shards this instance holds (the chat service's session directory).
pub trait Holder: Send + Sync + 'static {
    /// The view of shard `k`, if held here.
    fn held(&self, k: u32) -> Option<GroupView>;
    /// Nobody has answered for shard `k` for a while: take it, as a stand-in (without
    /// waiting: the asker goes on asking).
    fn orphaned(&self, k: u32);
}

/// Cloneable handle for asking about groups.
#[derive(Clone)]
pub struct Groups {
    nats: async_nats::Client,
    bucket: kv::Store,
    shards: u32,
    holder: Option<Arc<dyn Holder>>,
}

impl Groups {
    /// Asks about the groups of a deployment of `shards` partitions; `holder` answers for the
    /// shards held here (none for the history service, which holds none).
    pub fn new(
        nats: async_nats::Client,
        bucket: kv::Store,
        shards: u32,
        holder: Option<Arc<dyn Holder>>,
    ) -> Self {
        Self {
            nats,
            bucket,
            shards: shards.max(1),
            holder,
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    pub fn bucket(&self) -> &kv::Store {
        &self.bucket
    }

    /// The view of shard `k`, if held here.
    pub fn held(&self, k: u32) -> Option<GroupView> {
        self.holder.as_ref()?.held(k)
    }

    /// Whether `user` is a member of `group` now: from the view if the group's shard is held
    /// here, else from the bucket.
    pub async fn is_member(&self, group: &GroupId, user: &UserId) -> anyhow::Result<bool> {
        if let Some(view) = self.held(subjects::group_shard(group, self.shards))
            && view.is_member(group, user)
        {
            return Ok(true);
        }
        Ok(membership(&self.bucket, group, user, self.shards)
            .await?
            .is_some())
    }

    /// `user`'s role in `group` now, none for a non-member: read from the bucket itself, for
    /// an authorisation that must see the latest change (a member just made admin).
    pub async fn role(&self, group: &GroupId, user: &UserId) -> anyhow::Result<Option<Role>> {
        Ok(membership(&self.bucket, group, user, self.shards)
            .await?
            .map(|m| m.role))
    }

    /// The group as `user` sees it, once its shard has applied `revision`; none if it does
    /// not exist.
    pub async fn info(
        &self,
        group: &GroupId,
        user: &UserId,
        revision: u64,
    ) -> anyhow::Result<Option<GroupFacts>> {
        let ask = GroupsAsk::Info {
            group: group.clone(),
            user: user.clone(),
        };
        match self.ask(self.shard_of(group), revision, ask).await? {
            GroupsAnswer::Info { facts } => Ok(facts),
            other => anyhow::bail!("a groups holder answered {other:?} to an info question"),
        }
    }

    /// [`Groups::info`] for each of `groups`, in order: one question per shard of theirs.
    pub async fn infos(
        &self,
        groups: &[GroupId],
        user: &UserId,
    ) -> anyhow::Result<Vec<Option<GroupFacts>>> {
        let by_shard = by_shard(groups.iter().map(|g| self.shard_of(g)));
        let answers = futures::future::try_join_all(by_shard.into_iter().map(|(k, at)| {
            let ask = GroupsAsk::Infos {
                groups: at.iter().map(|&i| groups[i].clone()).collect(),
                user: user.clone(),
            };
            async move { Ok::<_, anyhow::Error>((at, self.ask(k, 0, ask).await?)) }
        }))
        .await?;
        let mut facts = vec![None; groups.len()];
        for (at, answer) in answers {
            let GroupsAnswer::Infos { facts: found } = answer else {
                anyhow::bail!("a groups holder answered {answer:?} to an infos question");
            };
            place(&mut facts, at, found)?;
        }
        Ok(facts)
    }

    /// Up to `limit` members after `after`, whether more follow, and the member count.
    pub async fn members_page(
        &self,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
        revision: u64,
    ) -> anyhow::Result<(Vec<Member>, bool, usize)> {
        let ask = GroupsAsk::Members {
            group: group.clone(),
            after: after.cloned(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        match self.ask(self.shard_of(group), revision, ask).await? {
            GroupsAnswer::Members {
                members,
                more,
                count,
            } => Ok((members, more, count as usize)),
            other => anyhow::bail!("a groups holder answered {other:?} to a members question"),
        }
    }

    /// The members of a group of at most `limit` members, and its member count; no list
    /// above the limit.
    pub async fn members_if_at_most(
        &self,
        group: &GroupId,
        limit: usize,
    ) -> anyhow::Result<(Option<Vec<UserId>>, usize)> {
        let (members, more, count) = self.members_page(group, None, limit, 0).await?;
        let listed = (!more && count <= limit).then(|| members.into_iter().map(|m| m.user));
        Ok((listed.map(Iterator::collect), count))
    }

    /// Who takes over `group` from an owner who left (see [`GroupsAsk::Heir`]).
    pub async fn heir(&self, group: &GroupId, revision: u64) -> anyhow::Result<Option<UserId>> {
        let ask = GroupsAsk::Heir {
            group: group.clone(),
        };
        match self.ask(self.shard_of(group), revision, ask).await? {
            GroupsAnswer::Heir { heir } => Ok(heir),
            other => anyhow::bail!("a groups holder answered {other:?} to an heir question"),
        }
    }

    /// The groups of each of `users`, in order: one question per shard of theirs.
    pub async fn groups_of(&self, users: &[UserId]) -> anyhow::Result<Vec<Vec<GroupId>>> {
        let ask = |users| GroupsAsk::GroupsOf { users };
        let answers = self.ask_per_user_shard(users, ask).await?;
        let mut groups = vec![Vec::new(); users.len()];
        for (at, answer) in answers {
            let GroupsAnswer::GroupsOf { groups: lists } = answer else {
                anyhow::bail!("a groups holder answered {answer:?} to a groups-of question");
            };
            place(&mut groups, at, lists)?;
        }
        Ok(groups)
    }

    /// How many groups each of `users` is in, in order (the answer stays small however many
    /// groups they are in).
    pub async fn group_counts(&self, users: &[UserId]) -> anyhow::Result<Vec<usize>> {
        let ask = |users| GroupsAsk::GroupCounts { users };
        let answers = self.ask_per_user_shard(users, ask).await?;
        let mut counts = vec![0; users.len()];
        for (at, answer) in answers {
            let GroupsAnswer::GroupCounts { counts: found } = answer else {
                anyhow::bail!("a groups holder answered {answer:?} to a group-counts question");
            };
            place(
                &mut counts,
                at,
                found.into_iter().map(|c| c as usize).collect(),
            )?;
        }
        Ok(counts)
    }

    /// `ask` of the users of each shard, at once; each answer with the positions it is for.
    async fn ask_per_user_shard(
        &self,
        users: &[UserId],
        ask: impl Fn(Vec<UserId>) -> GroupsAsk,
    ) -> anyhow::Result<Vec<(Vec<usize>, GroupsAnswer)>> {
        let by_shard = by_shard(users.iter().map(|u| subjects::user_shard(u, self.shards)));
        futures::future::try_join_all(by_shard.into_iter().map(|(k, at)| {
            let ask = ask(at.iter().map(|&i| users[i].clone()).collect());
            async move { Ok::<_, anyhow::Error>((at, self.ask(k, 0, ask).await?)) }
        }))
        .await
    }

    fn shard_of(&self, group: &GroupId) -> u32 {
        subjects::group_shard(group, self.shards)
    }

    /// Asks shard `k`: in memory if it is held here, else of its holder, again while none
    /// answers (for at most [`PATIENCE`]).
    async fn ask(&self, k: u32, revision: u64, ask: GroupsAsk) -> anyhow::Result<GroupsAnswer> {
        let started = Instant::now();
        let mut unanswered_since = None;
        let payload: bytes::Bytes = serde_json::to_vec(&GroupsQuery {
            revision,
            ask: ask.clone(),
        })
        .expect("query to JSON")
        .into();
        loop {
            if let Some(view) = self.held(k) {
                return Ok(view.answer(revision, ask, REACH_PATIENCE).await);
            }
            let request = self
                .nats
                .request(subjects::groups_query(k), payload.clone());
            let error = match tokio::time::timeout(ASK_TIMEOUT, request).await {
                Ok(Ok(reply)) => return Ok(serde_json::from_slice(&reply.payload)?),
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    let since = *unanswered_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ORPHANED_AFTER
                        && let Some(holder) = &self.holder
                    {
                        holder.orphaned(k);
                    }
                    anyhow::anyhow!("no chat instance holds group shard {k}")
                }
                Ok(Err(e)) => e.into(),
                Err(_) => anyhow::anyhow!("group shard {k} gave no answer within {ASK_TIMEOUT:?}"),
            };
            if started.elapsed() >= PATIENCE {
                return Err(error);
            }
            tracing::debug!(error = %error, shard = k, "groups question not answered");
            tokio::time::sleep(ASK_RETRY).await;
        }
    }
}

/// The positions of a list's entries, by the shard of each (given in order).
fn by_shard(shards: impl Iterator<Item = u32>) -> BTreeMap<u32, Vec<usize>> {
    let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, k) in shards.enumerate() {
        by_shard.entry(k).or_default().push(i);
    }
    by_shard
}

/// Puts a holder's answers for the entries at positions `at` in their places.
fn place<T>(all: &mut [T], at: Vec<usize>, found: Vec<T>) -> anyhow::Result<()> {
    anyhow::ensure!(found.len() == at.len(), "a groups holder answered short");
    for (i, f) in at.into_iter().zip(found) {
        all[i] = f;
    }
    Ok(())
}

/// Answers questions about held shard `k` from `view` until `stop` (it is given up).
pub async fn serve_shard(
    nats: async_nats::Client,
    view: GroupView,
    questions: async_nats::Subscriber,
    stop: CancellationToken,
) {
    let answer = move |query: GroupsQuery| {
        let view = view.clone();
        async move { Some(view.answer(query.revision, query.ask, REACH_PATIENCE).await) }
    };
    plumbing::bus::answer_shard(nats, "groups", questions, stop, answer).await;
}
