//! Spreading the messages streams' leaders over the cluster. Each stream's leader takes
//! every write of its partition; JetStream elects leaders where it likes, and after a node
//! restarts they tend to gather on the nodes that stayed up. So the chat service (the
//! streams' owner) looks now and then at where they lead from, and when a server leads more
//! than its share (`ceil(P / n)` of the P streams over n servers), asks its excess streams to
//! step down towards the servers that lead fewest (ties by name). Leaders already spread are
//! left alone: a move costs the partition a leader election (publishes wait for it, and chat
//! retries them). Every instance decides alike from the same state, so instances never undo
//! each other's moves.

use std::time::Duration;

use async_nats::jetstream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::MessageStreams;

/// How often leaders are looked at.
const EVERY: Duration = Duration::from_secs(60);

/// The moves that spread `leaders` (one per stream: its leader and the servers that may lead
/// it) so that no server leads more than its share: `(stream index, to)`.
pub fn moves(leaders: &[(String, Vec<String>)]) -> Vec<(usize, String)> {
    let mut servers: Vec<&String> = leaders
        .iter()
        .flat_map(|(l, peers)| peers.iter().chain([l]))
        .collect();
    servers.sort();
    servers.dedup();
    if servers.is_empty() {
        return Vec::new();
    }
    let share = leaders.len().div_ceil(servers.len());
    let mut count: std::collections::BTreeMap<&String, usize> =
        servers.iter().map(|s| (*s, 0)).collect();
    for (leader, _) in leaders {
        *count.get_mut(leader).expect("a server") += 1;
    }
    let mut out = Vec::new();
    for (i, (leader, peers)) in leaders.iter().enumerate() {
        if count[leader] <= share {
            continue;
        }
        let Some(to) = peers
            .iter()
            .filter(|p| *p != leader)
            .min_by_key(|p| (count[p], (*p).clone()))
        else {
            continue;
        };
        if count[to] + 1 > share {
            continue;
        }
        *count.get_mut(leader).expect("a server") -= 1;
        *count.get_mut(to).expect("a server") += 1;
        out.push((i, to.clone()));
    }
    out
}

/// Looks at the leaders now and every minute until `stop`.
pub async fn keep_spread(js: jetstream::Context, streams: MessageStreams, stop: CancellationToken) {
    loop {
        let moved = spread(&js, &streams).await;
        if moved > 0 {
            tracing::info!(moved, "asked messages stream leaders to move");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Asks the streams of servers leading more than their share to step down towards the
/// servers leading fewest; the number asked. Nothing moves while an election is under way or
/// a replica is behind, nor on a single server (no replicas).
pub async fn spread(js: &jetstream::Context, streams: &MessageStreams) -> usize {
    let mut state = Vec::new();
    for stream in streams.iter() {
        let name = stream.cached_info().config.name.clone();
        let Ok(mut stream) = js.get_stream(&name).await else {
            return 0;
        };
        let Ok(info) = stream.info().await else {
            return 0;
        };
        let Some(cluster) = &info.cluster else {
            return 0;
        };
        let Some(leader) = cluster.leader.clone() else {
            return 0; // an election is under way
        };
        if cluster.replicas.is_empty() {
            return 0;
        }
        // A replica behind would only be refused the leadership.
        let peers: Vec<String> = cluster
            .replicas
            .iter()
            .filter(|p| p.current && !p.offline)
            .map(|p| p.name.clone())
            .collect();
        state.push((name, leader, peers));
    }
    let leaders: Vec<(String, Vec<String>)> = state
        .iter()
        .map(|(_, leader, peers)| (leader.clone(), peers.clone()))
        .collect();
    let mut moved = 0;
    for (i, to) in moves(&leaders) {
        let (name, from, _) = &state[i];
        let request = serde_json::json!({ "placement": { "preferred": to } });
        let subject = format!("STREAM.LEADER.STEPDOWN.{name}");
        match js.request::<_, _, StepDown>(subject, &request).await {
            Ok(StepDown { success: true, .. }) => {
                tracing::info!(stream = %name, %from, %to, "leader asked to move");
                moved += 1;
            }
            Ok(StepDown { error, .. }) => {
                tracing::warn!(stream = %name, ?error, "leader did not move");
            }
            Err(e) => tracing::warn!(stream = %name, error = %e, "leader did not move"),
        }
    }
    moved
}

#[derive(Deserialize)]
struct StepDown {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn state(leaders: &[&str]) -> Vec<(String, Vec<String>)> {
        let all = ["n1", "n2", "n3"];
        leaders
            .iter()
            .map(|l| {
                let peers = all.iter().filter(|p| *p != l).copied().collect::<Vec<_>>();
                (l.to_string(), names(&peers))
            })
            .collect()
    }

    #[test]
    fn leaders_already_spread_stay_where_they_are() {
        assert!(moves(&state(&["n2", "n3", "n1"])).is_empty());
        assert!(moves(&state(&["n1", "n2", "n3", "n1"])).is_empty());
        assert!(moves(&state(&["n1"])).is_empty());
    }

    #[test]
    fn leaders_gathered_on_one_server_move_to_the_least_loaded() {
        assert_eq!(
            moves(&state(&["n1", "n1", "n1"])),
            [(0, "n2".to_string()), (1, "n3".to_string())]
        );
        // Six streams, two per server at most.
        let six = moves(&state(&["n2", "n2", "n2", "n2", "n1", "n3"]));
        assert_eq!(six.len(), 2);
        let mut count = std::collections::HashMap::new();
        for (i, l) in state(&["n2", "n2", "n2", "n2", "n1", "n3"])
            .iter()
            .enumerate()
        {
            let to = six.iter().find(|(j, _)| *j == i).map_or(&l.0, |(_, to)| to);
            *count.entry(to.clone()).or_insert(0) += 1;
        }
        assert!(count.values().all(|&c| c == 2), "{count:?}");
    }

    #[test]
    fn a_stream_moves_only_to_a_server_that_holds_it() {
        let leaders = vec![
            ("n1".to_string(), names(&["n2"])),
            ("n1".to_string(), names(&["n2"])),
        ];
        assert_eq!(moves(&leaders), [(0, "n2".to_string())]);
    }
}
