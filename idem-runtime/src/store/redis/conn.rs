//! The store's connections: reconnecting multiplexed connections to one server (the `redis`
//! crate's connection manager), or a Redis Cluster client, behind one type the scripts run on;
//! and the nodes a `SCAN` must visit (every primary of a cluster).

use std::sync::atomic::{AtomicUsize, Ordering};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisFuture, RedisResult, Value};

/// One connection: to a single server (reconnects by itself after a failure) or to a cluster
/// (follows `MOVED`/`ASK` redirections and topology changes).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A node to send a keyless command to: `None` on a single server.
pub(super) type Node = Option<(String, u16)>;

impl Conn {
    /// The nodes that hold keys: the one server, or every primary of a cluster (from
    /// `CLUSTER SLOTS`, asked of any node).
    pub(super) async fn key_nodes(&mut self) -> RedisResult<Vec<Node>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![None]);
        };
        let slots = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let mut nodes: Vec<Node> = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                // [start, end, [host, port, id, ...] (the primary), replicas...]
                let Value::Array(parts) = range else { continue };
                let Some(Value::Array(primary)) = parts.get(2) else {
                    continue;
                };
                let host: Option<String> = primary
                    .first()
                    .and_then(|v| redis::from_redis_value_ref(v).ok());
                let port: Option<u16> = primary
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref(v).ok());
                if let (Some(host), Some(port)) = (host, port) {
                    let node = Some((host, port));
                    if !nodes.contains(&node) {
                        nodes.push(node);
                    }
                }
            }
        }
        Ok(nodes)
    }

    /// `WAIT replicas timeout_ms` on the connection (to a cluster: to the primary of `key`)
    /// that just wrote `key`: how many replicas acknowledged every write sent on it so far.
    pub(super) async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<i64> {
        let cmd = redis::cmd("WAIT").arg(replicas).arg(timeout_ms).clone();
        let value = match self {
            Conn::Single(c) => cmd.query_async(c).await?,
            Conn::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await?
            }
        };
        Ok(redis::from_redis_value(value)?)
    }

    /// Sends a keyless command (`SCAN`, `TIME`) to `node`.
    pub(super) async fn on_node(&mut self, node: &Node, cmd: Cmd) -> RedisResult<Value> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await
            }
            (Conn::Cluster(c), None) => {
                c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await
            }
            (Conn::Single(c), _) => cmd.query_async(c).await,
        }
    }
}

/// A few connections, handed out in turn: each multiplexes every request sent to it on one
/// socket, so a handful is enough for thousands of concurrent calls.
#[derive(Debug)]
pub(super) struct Connections {
    first: Conn,
    more: Vec<Conn>,
    next: AtomicUsize,
}

impl Connections {
    pub(super) fn new(first: Conn, more: Vec<Conn>) -> Self {
        Self {
            first,
            more,
            next: AtomicUsize::new(0),
        }
    }

    /// The next connection (a cheap clone of a shared handle).
    pub(super) fn get(&self) -> Conn {
        if self.more.is_empty() {
            return self.first.clone();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % (self.more.len() + 1);
        self.more.get(i).unwrap_or(&self.first).clone()
    }
}
