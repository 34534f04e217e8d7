//! Who is connected where: the session directory, split into session shards by user, with
//! the gateways' leases, the sweeper and the presence deciders (see `directory.rs`).

mod decider;
mod directory;
mod leases;
mod route_cache;
mod shard;

use protocol::{ConnId, GatewayId};

pub use decider::delete_unsharded_consumer;
pub use directory::{Directory, Found};
pub use route_cache::RouteCache;

/// A session as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub gateway: GatewayId,
    pub conn: ConnId,
}
