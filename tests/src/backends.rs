//! Backends the conformance suite runs on: a store plus the handles the scenarios need.

use std::sync::Arc;

use idem_runtime::store::memory::MemoryStore;
use idem_runtime::store::postgres::{PostgresStore, PostgresStoreBuilder};
use idem_runtime::store::redis::{RedisStore, RedisStoreBuilder};
use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::{Idem, Store};

/// One store under test. Scenarios open several handles on it to play several workers.
#[derive(Debug)]
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Keeps a temporary directory alive for file-backed stores.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, _dir: None }
    }

    /// A handle without the snapshot cache, so every call reaches the store.
    pub fn worker(&self, name: &str) -> Idem {
        Idem::builder(self.store.clone())
            .cache_capacity(0)
            .worker(name)
            .build()
    }

    /// A handle with the snapshot cache on.
    pub fn cached_worker(&self, name: &str) -> Idem {
        Idem::builder(self.store.clone()).worker(name).build()
    }
}

/// A fresh memory store.
pub async fn memory() -> Option<Backend> {
    Some(Backend::new(Arc::new(MemoryStore::new())))
}

/// A fresh SQLite file in a temporary directory.
pub async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    let store = SqliteStore::open(&url).await.expect("open sqlite");
    Some(Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    })
}

/// The PostgreSQL server the server-backed tests use: `IDEM_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A new schema name for one test's tables (created by the store's migration), so tests sharing
/// the database never share tables: fencing tokens only grow per store (purge and forget raise
/// a store-wide floor), and the scenarios pin exact attempt numbers. The name carries its
/// creation time, so later runs drop schemas left behind (see [`drop_stale_postgres_schemas`]).
pub fn fresh_postgres_schema() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "idem_t_{secs}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Drops test schemas created more than an hour ago (left behind by earlier runs).
pub async fn drop_stale_postgres_schemas(pool: &sqlx::PgPool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let names: Vec<String> = sqlx::query_scalar(
        r"SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'idem\_t\_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|c| c + 3600 < now)
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// [`postgres_url`] with the store options of a test (its schema, a small pool), for
/// `store::open` and worker processes.
pub fn postgres_test_url(schema: &str, max_connections: u32) -> String {
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}idem_schema={schema}&idem_max_connections={max_connections}")
}

/// Opens a store in `schema` on the test server, or says loudly why not: `None` (skip) when the
/// server is unreachable, unless [`crate::servers_required`] (CI), where that is a failure. Any
/// other error (a failed migration, say) always fails.
pub async fn postgres_store(
    schema: &str,
    builder: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> Option<PostgresStore> {
    let url = postgres_url();
    let base = PostgresStore::builder(&url)
        .schema(schema)
        .max_connections(8)
        .application_name("idem-test");
    match builder(base).open().await {
        Ok(store) => Some(store),
        Err(e @ idem_runtime::Error::Open { .. }) if e.to_string().contains("cannot connect") => {
            if crate::servers_required() {
                panic!("the PostgreSQL server is required (CI=true) but unreachable: {e}");
            }
            eprintln!(
                "\n*** SKIPPED: PostgreSQL test: the server at {url} is unreachable ({e}); \
                 set IDEM_TEST_POSTGRES_URL or start PostgreSQL ***\n"
            );
            None
        }
        Err(e) => panic!("cannot open the PostgreSQL store: {e}"),
    }
}

/// A store on the test PostgreSQL server, in a fresh schema (see [`postgres_store`] for when it
/// is `None`).
pub async fn postgres() -> Option<Backend> {
    let store = postgres_store(&fresh_postgres_schema(), |b| b).await?;
    drop_stale_postgres_schemas(store.pool()).await;
    Some(Backend::new(Arc::new(store)))
}

/// The Redis server the server-backed tests use: `IDEM_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A new key prefix for one test's store, so tests sharing the server never share records or
/// attempt floors. It carries its creation time, so later runs delete what earlier ones left
/// behind (see [`drop_stale_redis_prefixes`]).
pub fn fresh_redis_prefix() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "idemt:{secs}:{}:",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Opens a store under `prefix` on `url`, or says loudly why not: `None` (skip) when the server
/// is unreachable, unless [`crate::servers_required`] (CI), where that is a failure. Any other
/// error always fails.
pub async fn redis_store_at(
    url: &str,
    builder: impl FnOnce(RedisStoreBuilder) -> RedisStoreBuilder,
) -> Option<RedisStore> {
    match builder(RedisStore::builder(url)).open().await {
        Ok(store) => Some(store),
        Err(e @ idem_runtime::Error::Open { .. }) if e.to_string().contains("cannot connect") => {
            if crate::servers_required() {
                panic!("the Redis server is required (CI=true) but unreachable: {e}");
            }
            eprintln!(
                "\n*** SKIPPED: Redis test: the server at {url} is unreachable ({e}); \
                 set IDEM_TEST_REDIS_URL or start Redis ***\n"
            );
            None
        }
        Err(e) => panic!("cannot open the Redis store: {e}"),
    }
}

/// Deletes the keys of test prefixes created more than an hour ago (left behind by earlier
/// runs: records of crashed attempts never expire by themselves).
pub async fn drop_stale_redis_prefixes(url: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, names)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("idemt:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        let stale: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.split(':')
                    .nth(1)
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|created| created + 3600 < now)
            })
            .collect();
        if !stale.is_empty() {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(stale).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A store on the test Redis server under a fresh prefix (see [`redis_store_at`] for when it is
/// `None`).
pub async fn redis() -> Option<Backend> {
    let url = redis_url();
    let store = redis_store_at(&url, |b| b.prefix(&fresh_redis_prefix())).await?;
    // Once per test process: the walk covers the whole keyspace.
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        drop_stale_redis_prefixes(&url).await;
    }
    Some(Backend::new(Arc::new(store)))
}
