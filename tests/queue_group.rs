//! Group commit of transactional consumers (`Consumer::group_commit`) on SQLite and
//! PostgreSQL, fed by NATS JetStream (the shared server at `IDEM_TEST_NATS_URL`): messages
//! waiting together commit in one transaction, each exactly once; a duplicate inside or across
//! groups replays; a failing message rolls its group back and the others commit alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use idem_runtime::queue::nats::JetStreamSource;
use idem_runtime::queue::{Consumer, ConsumerReport};
use idem_runtime::store::postgres::PostgresStore;
use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::{Error, Idem};
use idem_tests::backends;
use idem_tests::brokers::{self, NatsFixture};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: String,
    fail: bool,
}

/// Handler runs per job id (a run in a group that rolled back counts too).
type Runs = Arc<Mutex<HashMap<String, u32>>>;

const LIMIT: Duration = Duration::from_secs(60);

/// A step handler on transactions of `$tx`: counts its run, inserts the job's row in the
/// transaction, fails when asked.
macro_rules! handler {
    ($tx:ty, $runs:expr, $insert:expr) => {{
        let (runs, insert): (Runs, String) = (Arc::clone($runs), $insert);
        higher_ranked::<$tx, _>(move |tx, job: Job| {
            let (runs, insert) = (Arc::clone(&runs), insert.clone());
            Box::pin(async move {
                *runs.lock().unwrap().entry(job.id.clone()).or_default() += 1;
                sqlx::query(&insert)
                    .bind(&job.id)
                    .execute(&mut **tx)
                    .await?;
                if job.fail {
                    return Err(Error::Config(format!("job {} fails on purpose", job.id)));
                }
                Ok(format!("done {}", job.id))
            })
        })
    }};
}

/// Gives a step handler closure the signature `run_in_tx` expects (any transaction lifetime).
fn higher_ranked<Tx, F>(handler: F) -> F
where
    F: for<'c> Fn(&'c mut Tx, Job) -> BoxFuture<'c, Result<String, Error>>,
{
    handler
}

/// A database the consumer's steps write to: the store's own, with an effects table.
enum Db {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Db {
    async fn sqlite(dir: &tempfile::TempDir) -> Self {
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE effects (job TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        Db::Sqlite(store)
    }

    async fn postgres() -> Option<Self> {
        let schema = backends::fresh_postgres_schema();
        let store = backends::postgres_store(&schema, |b| b.max_connections(24)).await?;
        backends::drop_stale_postgres_schemas(store.pool()).await;
        sqlx::query(&format!(
            "CREATE TABLE \"{schema}\".effects (job text NOT NULL)"
        ))
        .execute(store.pool())
        .await
        .unwrap();
        Some(Db::Postgres(store))
    }

    fn idem(&self) -> Idem {
        let store: Arc<dyn idem_runtime::Store> = match self {
            Db::Sqlite(s) => Arc::new(s.clone()),
            Db::Postgres(s) => Arc::new(s.clone()),
        };
        Idem::builder(store).cache_capacity(0).worker("w").build()
    }

    /// Rows per job id.
    async fn effects(&self) -> HashMap<String, i64> {
        let rows: Vec<(String, i64)> = match self {
            Db::Sqlite(s) => sqlx::query_as("SELECT job, count(*) FROM effects GROUP BY job")
                .fetch_all(s.pool())
                .await
                .unwrap(),
            Db::Postgres(s) => sqlx::query_as(&format!(
                "SELECT job, count(*) FROM \"{}\".effects GROUP BY job",
                s.schema()
            ))
            .fetch_all(s.pool())
            .await
            .unwrap(),
        };
        rows.into_iter().collect()
    }

    /// Runs `consumer` over `source` until `done`, each message a step inserting its job's row.
    async fn consume(
        &self,
        consumer: &Consumer,
        source: JetStreamSource,
        runs: &Runs,
        done: impl Fn(&ConsumerReport) -> bool + Send,
    ) -> ConsumerReport {
        let until = until(consumer, done);
        let run = async {
            match self {
                Db::Sqlite(s) => {
                    let insert = "INSERT INTO effects (job) VALUES (?1)".to_owned();
                    let handler = handler!(sqlx::Transaction<'static, sqlx::Sqlite>, runs, insert);
                    consumer
                        .run_in_tx(source, s.pool().clone(), handler, until)
                        .await
                }
                Db::Postgres(s) => {
                    let insert =
                        format!("INSERT INTO \"{}\".effects (job) VALUES ($1)", s.schema());
                    let handler =
                        handler!(sqlx::Transaction<'static, sqlx::Postgres>, runs, insert);
                    consumer
                        .run_in_tx(source, s.pool().clone(), handler, until)
                        .await
                }
            }
        };
        tokio::time::timeout(LIMIT, run).await.unwrap().unwrap()
    }
}

async fn until(consumer: &Consumer, done: impl Fn(&ConsumerReport) -> bool) {
    loop {
        if done(&consumer.report()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes jobs without a message id: the consumer keys them by the job id, so a job
/// published twice is a duplicate for idem (not for JetStream).
async fn publish(fx: &NatsFixture, jobs: &[Job]) {
    for job in jobs {
        fx.publish(None, &serde_json::to_vec(job).unwrap()).await;
    }
}

fn key_by_job(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<Job>(payload).ok().map(|j| j.id)
}

async fn source(fx: &NatsFixture, name: &str) -> JetStreamSource {
    let consumer = fx.consumer(name, Duration::from_secs(30)).await;
    JetStreamSource::new(fx.js.clone(), &consumer, fx.dead.clone(), 64)
        .await
        .unwrap()
}

/// 40 jobs, 10 of them published twice, all waiting before the consumer starts: they commit in
/// groups, each job's row exactly once, and every duplicate replays.
async fn groups_commit_each_message_once(db: Db) {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let mut jobs: Vec<Job> = (0..40)
        .map(|i| Job {
            id: format!("j{i}"),
            fail: false,
        })
        .collect();
    // Duplicates right after their first (likely in the same group) and at the end (likely in
    // another one).
    for i in [0, 1, 2, 3, 4] {
        jobs.insert(2 * i + 1, jobs[2 * i].clone());
    }
    jobs.extend((30..35).map(|i| Job {
        id: format!("j{i}"),
        fail: false,
    }));
    publish(&fx, &jobs).await;
    let consumer = Consumer::new(db.idem(), idem_tests::unique_op("group.once"))
        .concurrency(16)
        .group_commit(8)
        .key_fn(key_by_job);
    let runs = Runs::default();
    let report = db
        .consume(&consumer, source(&fx, "once").await, &runs, |r| {
            r.acked >= 50
        })
        .await;
    let effects = db.effects().await;
    assert_eq!(effects.len(), 40, "{effects:?} {report:?}");
    assert!(effects.values().all(|&n| n == 1), "{effects:?} {report:?}");
    assert_eq!(report.executed, 40, "{report:?}");
    assert_eq!(report.replayed, 10, "{report:?}");
    assert!(
        report.grouped >= 8,
        "messages committed in groups: {report:?}"
    );
    assert!(report.max_in_flight <= 16, "{report:?}");
    fx.delete().await;
}

/// A job that always fails rolls its group back: the group's other jobs commit alone, once
/// each (their handlers ran twice, their rows are there once), and the failing job is retried
/// and dead-lettered without a row.
async fn a_failing_message_sends_its_group_alone(db: Db) {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let jobs: Vec<Job> = (0..24)
        .map(|i| Job {
            id: format!("j{i}"),
            fail: i == 5,
        })
        .collect();
    publish(&fx, &jobs).await;
    let consumer = Consumer::new(db.idem(), idem_tests::unique_op("group.failing"))
        .concurrency(16)
        .group_commit(8)
        .max_attempts(2)
        .retry_delay(Duration::from_millis(50))
        .key_fn(key_by_job);
    let runs = Runs::default();
    let report = db
        .consume(&consumer, source(&fx, "failing").await, &runs, |r| {
            r.acked >= 23 && r.dead_lettered >= 1
        })
        .await;
    let effects = db.effects().await;
    assert_eq!(
        effects.get("j5"),
        None,
        "the failing job left no row: {effects:?}"
    );
    assert_eq!(effects.len(), 23, "{effects:?} {report:?}");
    assert!(effects.values().all(|&n| n == 1), "{effects:?} {report:?}");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    assert!(report.group_fallbacks >= 1, "{report:?}");
    let failing_runs = runs.lock().unwrap()["j5"];
    assert!(
        failing_runs >= 2,
        "in the group, then alone: {failing_runs}"
    );
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_groups_commit_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    groups_commit_each_message_once(Db::sqlite(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_groups_commit_each_message_once() {
    if let Some(db) = Db::postgres().await {
        groups_commit_each_message_once(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_failing_message_sends_its_group_alone() {
    let dir = tempfile::tempdir().unwrap();
    a_failing_message_sends_its_group_alone(Db::sqlite(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_failing_message_sends_its_group_alone() {
    if let Some(db) = Db::postgres().await {
        a_failing_message_sends_its_group_alone(db).await;
    }
}
