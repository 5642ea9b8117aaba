//! The Redis/Valkey store (`redis://...`, `rediss://...`; feature `redis`): for services that
//! already run Redis and no relational database, on one server or a Redis Cluster.
//!
//! - **One round trip per decision.** Claim, renew, complete, forget, release, stream appends
//!   and purge are Lua scripts (`scripts.rs`), run atomically by the server through `EVALSHA`
//!   (reloaded on `NOSCRIPT`). A claim returns the snapshot of a completed record in the same
//!   reply, so a replay is one round trip too.
//! - **The server's clock**: every script reads `TIME`; no worker's clock is ever sent.
//! - **Fencing tokens never go backwards**: every attempt number comes from its group's counter
//!   (`INCR`, `layout.rs`), so a key recreated after its record expired, was forgotten or purged
//!   gets a higher attempt number than any it had.
//! - **The current attempt lives in the record** (as in the SQL stores' rows): a miss writes
//!   one hash and rewrites it, and only a key with more than one attempt has an attempts log.
//! - **Native expiry**: a completed or failed record, its attempts log and its stream journal
//!   get `PEXPIREAT` at the record's expiry, so Redis deletes them exactly at their ttl. Running
//!   records never expire by themselves: an abandoned one waits for a takeover or a purge.
//! - **Cluster-safe layout**: all keys of one idem key share a hash tag, so every script runs in
//!   one slot; listings and purges `SCAN` every primary (never `KEYS`).
//! - **Pub/sub** wakes waiters and keeps snapshot caches fresh across processes (`listen.rs`).
//! - **Reconnecting connections** (`conn.rs`): the `redis` crate's connection manager (or its
//!   cluster client), so a store survives a server restart; while the server is away every
//!   operation fails closed with [`Error::Store`].
//!
//! Open it with [`RedisStore::open`], [`RedisStore::builder`], or through `store::open`. A URL may
//! carry the store's options as query parameters, removed before the URL reaches the driver:
//! `idem_prefix`, `idem_connections`, `idem_cluster`, `idem_connect_timeout_ms`,
//! `idem_response_timeout_ms` (`redis://:secret@cache:6379/0?idem_prefix=billing:`).

mod builder;
mod conn;
mod layout;
mod listen;
mod rows;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::Value;

pub use self::builder::{RedisStoreBuilder, MIN_SERVER_VERSION};
use self::conn::{Conn, Connections, Node};
pub use self::layout::FORMAT_VERSION;
use self::layout::{KeyNames, Layout, LOG_CAP};
use self::listen::Notifier;
use self::rows::Reply;
use self::scripts::Scripts;
use super::{
    millis, AttemptRef, AvoidedCost, ChangeSink, Claim, ClaimRequest, CostLine, Fence, ListFilter,
    OpCounts, Outcome, Store, StoredChunk, RELEASED_TTL,
};
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::record::{
    AttemptLog, AttemptOutcome, Costs, Millis, Record, Snapshot, SnapshotKind, Status,
};

/// The key of store-wide errors.
const NO_KEY: Key = Key([0; 32]);

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1000;

/// The longest ttl or lease a script is sent (about 100 years): keeps every time the scripts
/// compute exact in Lua's doubles.
const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A [`Store`] on Redis or Valkey. Cheap to clone (the connections are shared).
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conns: Connections,
    layout: Layout,
    scripts: Scripts,
    notifier: Option<Notifier>,
    /// Replicas every decision waits for (`WAIT`), if any.
    replicas: Option<builder::Replicas>,
    /// The URL, password removed.
    url: String,
}

fn span_ms(d: Duration) -> i64 {
    millis(d.min(MAX_SPAN))
}

impl RedisStore {
    /// Opens `url` (`redis://[:password@]host:6379[/db][?idem_prefix=...]`) with default options.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::builder(url).open().await
    }

    /// Options for opening `url`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), idem_runtime::Error> {
    /// use idem_runtime::store::redis::RedisStore;
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .prefix("billing:idem:")
    ///     .connections(4)
    ///     .open()
    ///     .await?;
    /// let idem = idem_runtime::Idem::new(store);
    /// # let _ = idem; Ok(()) }
    /// ```
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        self.inner.layout.prefix()
    }

    /// The URL it was opened from, password removed.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether the change subscription is up (waiters are woken at once, caches told).
    pub fn listening(&self) -> bool {
        self.inner.notifier.as_ref().is_some_and(Notifier::is_up)
    }

    /// Stops the change subscriber. The connections close when the last clone is dropped.
    pub fn close(&self) {
        if let Some(n) = &self.inner.notifier {
            n.close();
        }
    }

    /// The source of the claim script, for baselines that run it outside the store (the
    /// bench's `redis-benchmark` rounds). Its KEYS are the record, log and floor keys; its ARGV
    /// the operation, fingerprint hex (or empty), lease ms, worker, how many past attempts the
    /// log keeps, parent key hex (or empty) and position in the parent.
    pub fn claim_script_source() -> String {
        Scripts::claim_source()
    }

    fn conn(&self) -> Conn {
        self.inner.conns.get()
    }

    /// With [`RedisStoreBuilder::wait_replicas`]: waits until enough replicas acknowledged the
    /// writes `conn` sent (the decision just made on `record`), else fails closed.
    async fn replicated(
        &self,
        conn: &mut Conn,
        record: &str,
        action: &'static str,
        op: &str,
        key: &Key,
    ) -> Result<(), Error> {
        let Some(r) = self.inner.replicas else {
            return Ok(());
        };
        let timeout = u64::try_from(r.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let acked = conn
            .wait_replicas(record, r.count, timeout)
            .await
            .map_err(|e| Error::store(action, op, key, e))?;
        if acked < i64::from(r.count) {
            return Err(Error::store(
                action,
                op,
                key,
                format!(
                    "only {acked} of {} replicas acknowledged the write within {:?} (WAIT)",
                    r.count, r.timeout
                ),
            ));
        }
        Ok(())
    }

    fn names(&self, key: &Key) -> KeyNames {
        self.inner.layout.key(key)
    }

    fn publish_args(&self, key: &Key) -> (String, String) {
        (self.inner.layout.channel(), key.to_hex())
    }

    /// A walk over every record hash under the prefix, node by node (`SCAN`, never `KEYS`).
    async fn scan(&self, action: &'static str) -> Result<RecordScan, Error> {
        let mut conn = self.conn();
        let nodes = conn
            .key_nodes()
            .await
            .map_err(|e| Error::store(action, "", &NO_KEY, e))?;
        Ok(RecordScan {
            conn,
            nodes,
            node: 0,
            cursor: 0,
            pattern: self.inner.layout.record_pattern(),
            action,
        })
    }

    /// The listed fields of each named record (concurrently; the connection pipelines them).
    async fn read_listed(
        &self,
        action: &'static str,
        names: &[Vec<u8>],
    ) -> Result<Vec<Record>, Error> {
        let reads = names.iter().filter_map(|name| {
            let key = self.inner.layout.key_of(name)?;
            let mut conn = self.conn();
            let name = name.clone();
            Some(async move {
                let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                    .arg(&name)
                    .arg(&rows::LISTED[..])
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::store(action, "", &key, e))?;
                if values.iter().all(Option::is_none) {
                    return Ok(None); // expired or deleted since the scan
                }
                rows::record(&key, &rows::listed_fields(values)).map(Some)
            })
        });
        let mut out = Vec::new();
        for r in join_all(reads).await {
            if let Some(record) = r? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The server's clock, in [`Millis`].
    async fn server_now(&self, action: &'static str) -> Result<Millis, Error> {
        let reply = self
            .conn()
            .on_node(&None, redis::cmd("TIME"))
            .await
            .map_err(|e| Error::store(action, "", &NO_KEY, e))?;
        let (secs, micros): (i64, i64) =
            redis::from_redis_value(reply).map_err(|e| Error::store(action, "", &NO_KEY, e))?;
        Ok(secs * 1000 + micros / 1000)
    }
}

/// A `SCAN` over the record hashes of every node.
struct RecordScan {
    conn: Conn,
    nodes: Vec<Node>,
    node: usize,
    cursor: u64,
    pattern: String,
    action: &'static str,
}

impl RecordScan {
    /// The next non-empty page of record hash names, or `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let action = self.action;
        let fail = |e: redis::RedisError| Error::store(action, "", &NO_KEY, e);
        while let Some(node) = self.nodes.get(self.node) {
            let cmd = redis::cmd("SCAN")
                .arg(self.cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("hash")
                .clone();
            let reply = self.conn.on_node(node, cmd).await.map_err(fail)?;
            let (next, names): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(reply).map_err(|e| fail(e.into()))?;
            self.cursor = next;
            if next == 0 {
                self.node += 1;
            }
            if !names.is_empty() {
                return Ok(Some(names));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let n = self.names(req.key);
        let mut conn = self.conn();
        let fail = |e| Error::store("claim", req.op, req.key, e);
        let value: Value = self
            .inner
            .scripts
            .claim
            .key(&n.record)
            .key(&n.log)
            .key(&n.floor)
            .arg(req.op)
            .arg(req.fingerprint.map(Fingerprint::to_hex).unwrap_or_default())
            .arg(span_ms(req.lease))
            .arg(req.worker)
            .arg(LOG_CAP - 1)
            .arg(req.parent.map(|p| p.key.to_hex()).unwrap_or_default())
            .arg(req.parent.map_or(0, |p| p.position))
            .invoke_async(&mut conn)
            .await
            .map_err(fail)?;
        let reply = Reply::new(value);
        if reply.text(0) == "acquired" {
            self.replicated(&mut conn, &n.record, "claim", req.op, req.key)
                .await?;
        }
        let corrupt = |reason: &str| Error::Corrupt {
            op: req.op.to_owned(),
            key: *req.key,
            reason: reason.to_owned(),
        };
        let attempt = u64::try_from(reply.int(1)).unwrap_or(0);
        match reply.text(0).as_str() {
            "acquired" => Ok(Claim::Acquired {
                attempt,
                took_over: u64::try_from(reply.int(2)).ok().filter(|a| *a > 0),
            }),
            "running" => Ok(Claim::Running {
                attempt,
                lease_left: Duration::from_millis(u64::try_from(reply.int(2)).unwrap_or(0)),
            }),
            "reuse" => Ok(Claim::KeyReuse),
            "completed" => {
                let expires_at = reply.text(2).parse::<Millis>().unwrap_or(Millis::MAX);
                let kind = SnapshotKind::parse(&reply.text(3))
                    .ok_or_else(|| corrupt("completed record without a snapshot kind"))?;
                let bytes = reply
                    .bytes(4)
                    .ok_or_else(|| corrupt("completed record without a snapshot"))?;
                let fingerprint = match reply.bytes(5) {
                    None => None,
                    Some(hex) => Some(
                        std::str::from_utf8(&hex)
                            .ok()
                            .and_then(Fingerprint::from_hex)
                            .ok_or_else(|| corrupt("fingerprint is not 64 hex digits"))?,
                    ),
                };
                let cost = match reply.text(6) {
                    json if json.is_empty() => None,
                    json => Some(Costs::from_json(&json).map_err(|e| corrupt(&e))?),
                };
                Ok(Claim::Completed(Snapshot {
                    attempt,
                    kind,
                    bytes,
                    expires_at,
                    fingerprint,
                    cost,
                }))
            }
            other => Err(corrupt(&format!("unexpected claim reply `{other}`"))),
        }
    }

    async fn renew(&self, a: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        let n = self.names(a.key);
        let mut conn = self.conn();
        let owned: i64 = self
            .inner
            .scripts
            .renew
            .key(&n.record)
            .arg(a.attempt)
            .arg(span_ms(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::store("renew", a.op, a.key, e))?;
        if owned != 1 {
            return Ok(Fence::Lost);
        }
        self.replicated(&mut conn, &n.record, "renew", a.op, a.key)
            .await?;
        Ok(Fence::Owned)
    }

    async fn complete(&self, a: &AttemptRef<'_>, outcome: Outcome<'_>) -> Result<Fence, Error> {
        let n = self.names(a.key);
        let mut conn = self.conn();
        let (channel, hex) = self.publish_args(a.key);
        let cost = outcome
            .cost()
            .filter(|c| !c.is_empty())
            .map(Costs::to_json)
            .unwrap_or_default();
        let (status, kind, payload, ttl, logged): (&str, &str, &[u8], Duration, AttemptOutcome) =
            match outcome {
                Outcome::Snapshot {
                    kind, bytes, ttl, ..
                } => (
                    Status::Completed.as_str(),
                    kind.as_str(),
                    bytes,
                    ttl,
                    match kind {
                        SnapshotKind::Ok => AttemptOutcome::Completed,
                        SnapshotKind::Err => AttemptOutcome::Failed,
                    },
                ),
                Outcome::Failed { error, ttl, .. } => (
                    Status::Failed.as_str(),
                    "",
                    error.as_bytes(),
                    ttl,
                    AttemptOutcome::Failed,
                ),
                Outcome::Cancelled { ttl, .. } => (
                    Status::Failed.as_str(),
                    "",
                    super::CANCELLED.as_bytes(),
                    ttl,
                    AttemptOutcome::Cancelled,
                ),
            };
        let owned: i64 = self
            .inner
            .scripts
            .complete
            .key(&n.record)
            .key(&n.log)
            .key(&n.floor)
            .key(&n.chunks)
            .arg(a.attempt)
            .arg(status)
            .arg(kind)
            .arg(payload)
            .arg(span_ms(ttl))
            .arg(logged.as_str())
            .arg(channel)
            .arg(hex)
            .arg(cost)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::store("complete", a.op, a.key, e))?;
        if owned != 1 {
            return Ok(Fence::Lost);
        }
        self.replicated(&mut conn, &n.record, "complete", a.op, a.key)
            .await?;
        Ok(Fence::Owned)
    }

    async fn wait_for_change(&self, key: &Key, max: Duration) {
        match &self.inner.notifier {
            Some(notifier) => notifier.wait(key, max).await,
            None => tokio::time::sleep(max).await,
        }
    }

    fn wakes_waiters(&self) -> bool {
        match &self.inner.notifier {
            Some(notifier) => {
                notifier.start();
                notifier.is_up()
            }
            None => false,
        }
    }

    fn watch(&self, sink: std::sync::Weak<dyn ChangeSink>) -> bool {
        match &self.inner.notifier {
            Some(notifier) => {
                notifier.watch(sink);
                true
            }
            None => false,
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let n = self.names(key);
        let fields: rows::Fields = redis::cmd("HGETALL")
            .arg(&n.record)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::store("get", "", key, e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        rows::record(key, &fields).map(Some)
    }

    /// A `SCAN` of every record under the prefix (snapshots are never read): there is no index
    /// of children, since a parent's and its children's keys live in different slots.
    async fn children(&self, parent: &Key) -> Result<Vec<Record>, Error> {
        let mut out: Vec<Record> = Vec::new();
        let mut scan = self.scan("children").await?;
        while let Some(names) = scan.next_page().await? {
            out.extend(
                self.read_listed("children", &names)
                    .await?
                    .into_iter()
                    .filter(|r| r.parent.is_some_and(|p| p.key == *parent)),
            );
        }
        out.sort_by_key(|r| (r.parent.map(|p| p.position), r.created_at, r.key));
        Ok(out)
    }

    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error> {
        if avoided.is_empty() {
            return Ok(());
        }
        let mut invocation = self.inner.scripts.add_avoided.prepare_invoke();
        invocation.key(self.inner.layout.avoided_key());
        for a in avoided {
            let field = serde_json::to_string(&(&a.op, &a.unit)).unwrap_or_default();
            invocation.arg(field).arg(a.amount).arg(a.replays);
        }
        invocation
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(|e| Error::store("add_avoided", "", &NO_KEY, e))?;
        Ok(())
    }

    /// Spent: the attempts logs of every record under the prefix (a `SCAN`); avoided: the
    /// ledger hash.
    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error> {
        let mut lines: std::collections::BTreeMap<(String, String), CostLine> = Default::default();
        let mut scan = self.scan("costs").await?;
        while let Some(names) = scan.next_page().await? {
            for r in self.read_listed("costs", &names).await? {
                if op.is_some_and(|op| r.op != op) {
                    continue;
                }
                for log in self.attempts(&r.key).await? {
                    for (unit, amount) in log.cost.iter().flat_map(|c| &c.0) {
                        lines
                            .entry((r.op.clone(), unit.clone()))
                            .or_insert_with(|| CostLine::new(&r.op, unit))
                            .spent += amount;
                    }
                }
            }
        }
        let ledger: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.inner.layout.avoided_key())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::store("costs", "", &NO_KEY, e))?;
        for (field, value) in &ledger {
            let (Some(kind), Some(json)) = (field.get(..1), field.get(1..)) else {
                continue;
            };
            let Ok((o, unit)) = serde_json::from_str::<(String, String)>(json) else {
                continue;
            };
            if op.is_some_and(|op| o != op) {
                continue;
            }
            let entry = lines
                .entry((o.clone(), unit.clone()))
                .or_insert_with(|| CostLine::new(&o, &unit));
            match kind {
                "a" => entry.avoided += value.parse::<f64>().unwrap_or(0.0),
                "n" => entry.replays += value.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
        Ok(lines.into_values().collect())
    }

    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        let n = self.names(key);
        let (lines, current): (Vec<Vec<u8>>, Vec<Option<Vec<u8>>>) = self
            .inner
            .scripts
            .attempts
            .key(&n.record)
            .key(&n.log)
            .arg(&rows::CURRENT_ATTEMPT[..])
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| Error::store("attempts", "", key, e))?;
        rows::attempts(key, &lines, &current)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        let mut out: Vec<Record> = Vec::new();
        let mut scan = self.scan("list").await?;
        while let Some(names) = scan.next_page().await? {
            out.extend(
                self.read_listed("list", &names)
                    .await?
                    .into_iter()
                    .filter(|r| {
                        filter.op.as_deref().is_none_or(|op| r.op == op)
                            && filter.status.is_none_or(|s| r.status == s)
                            && filter.updated_before.is_none_or(|t| r.updated_at < t)
                    }),
            );
        }
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.key.cmp(&b.key)));
        out.truncate(filter.limit.unwrap_or(1000) as usize);
        Ok(out)
    }

    /// Counts a `SCAN` of every record (snapshots are never read), judging `stuck` by the
    /// server's clock.
    async fn counts(&self, op: Option<&str>) -> Result<Vec<OpCounts>, Error> {
        let now = self.server_now("counts").await?;
        let mut by_op: std::collections::BTreeMap<String, OpCounts> = Default::default();
        let mut scan = self.scan("counts").await?;
        while let Some(names) = scan.next_page().await? {
            for r in self.read_listed("counts", &names).await? {
                if op.is_some_and(|op| r.op != op) {
                    continue;
                }
                let c = by_op
                    .entry(r.op.clone())
                    .or_insert_with(|| OpCounts::new(&r.op));
                c.records += 1;
                match r.status {
                    Status::Running => c.running += 1,
                    Status::Completed => c.completed += 1,
                    Status::Failed => c.failed += 1,
                }
                if r.status == Status::Running && r.lease_until.is_some_and(|l| l < now) {
                    c.stuck += 1;
                }
                c.attempts += r.attempt;
            }
        }
        Ok(by_op.into_values().collect())
    }

    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        let n = self.names(key);
        let mut conn = self.conn();
        let (channel, hex) = self.publish_args(key);
        let value: Value = self
            .inner
            .scripts
            .forget
            .key(&n.record)
            .key(&n.log)
            .key(&n.chunks)
            .key(&n.floor)
            .arg(if force { "1" } else { "0" })
            .arg(channel)
            .arg(hex)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::store("forget", "", key, e))?;
        let reply = Reply::new(value);
        match reply.text(0).as_str() {
            "deleted" => {
                self.replicated(&mut conn, &n.record, "forget", "", key)
                    .await?;
                Ok(true)
            }
            "gone" => Ok(false),
            _ => Err(Error::Running {
                op: reply.text(2),
                key: *key,
                attempt: u64::try_from(reply.int(1)).unwrap_or(0),
            }),
        }
    }

    async fn append_chunks(
        &self,
        a: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        let n = self.names(a.key);
        let (channel, hex) = self.publish_args(a.key);
        let mut invocation = self.inner.scripts.append.prepare_invoke();
        invocation
            .key(&n.record)
            .key(&n.chunks)
            .arg(a.attempt)
            .arg(first)
            .arg(channel)
            .arg(hex);
        for chunk in chunks {
            invocation.arg(rows::encode_chunk(chunk));
        }
        let mut conn = self.conn();
        let owned: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::store("append_chunks", a.op, a.key, e))?;
        if owned != 1 {
            return Ok(Fence::Lost);
        }
        self.replicated(&mut conn, &n.record, "append_chunks", a.op, a.key)
            .await?;
        Ok(Fence::Owned)
    }

    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        let n = self.names(key);
        let entries: Vec<Vec<u8>> = self
            .inner
            .scripts
            .read_chunks
            .key(&n.record)
            .key(&n.chunks)
            .arg(attempt)
            .arg(from)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| Error::store("read_chunks", "", key, e))?;
        entries.iter().map(|e| rows::decode_chunk(key, e)).collect()
    }

    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        let n = self.names(key);
        self.inner
            .scripts
            .count_chunks
            .key(&n.record)
            .key(&n.chunks)
            .arg(attempt)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| Error::store("count_chunks", "", key, e))
    }

    async fn release(&self, key: &Key) -> Result<bool, Error> {
        let n = self.names(key);
        let mut conn = self.conn();
        let (channel, hex) = self.publish_args(key);
        let released: i64 = self
            .inner
            .scripts
            .release
            .key(&n.record)
            .key(&n.log)
            .key(&n.chunks)
            .key(&n.floor)
            .arg(span_ms(RELEASED_TTL))
            .arg(channel)
            .arg(hex)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::store("release", "", key, e))?;
        if released == 1 {
            self.replicated(&mut conn, &n.record, "release", "", key)
                .await?;
        }
        Ok(released == 1)
    }

    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let now = self.server_now("purge").await?;
        let abandoned_before = now.saturating_sub(span_ms(abandoned_after));
        let batch = u64::from(batch);
        let mut deleted = 0u64;
        let mut scan = self.scan("purge").await?;
        while let Some(names) = scan.next_page().await? {
            // Candidates by the clock read above; the script decides again by its own.
            let doomed = self
                .read_listed("purge", &names)
                .await?
                .into_iter()
                .filter(|r| {
                    r.expires_at.is_some_and(|e| e <= now)
                        || (r.status == Status::Running
                            && r.lease_until.is_some_and(|l| l <= abandoned_before))
                })
                .map(|r| r.key);
            for key in doomed {
                if deleted >= batch {
                    return Ok(deleted);
                }
                let n = self.names(&key);
                let gone: i64 = self
                    .inner
                    .scripts
                    .purge
                    .key(&n.record)
                    .key(&n.log)
                    .key(&n.chunks)
                    .key(&n.floor)
                    .arg(span_ms(abandoned_after))
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(|e| Error::store("purge", "", &key, e))?;
                deleted += u64::try_from(gone).unwrap_or(0);
            }
        }
        Ok(deleted)
    }
}
