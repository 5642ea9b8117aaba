//! The torture harness's parts: the arguments and what the parent and the workers share (the
//! names of a run's table, schema and operation, the application's pool, a small random source).
//!
//! - `parent.rs`: sets a run up, spawns, kills and restarts the workers, prints the report.
//! - `worker.rs`: one worker process: steps over the key space until every key replays.
//! - `check.rs`: the final state, through SQL on the table and through the store's records.

pub(crate) mod check;
pub(crate) mod parent;
pub(crate) mod worker;

use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Kill workers running transactional steps at random points; check exactly-once at the end.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Store URL: `sqlite://path` or `postgres://...` (the application table goes into the
    /// same database; on PostgreSQL each run gets its own schemas).
    #[arg(long, default_value = "sqlite://target/idem-torture.db")]
    pub(crate) store: String,
    /// SIGKILLs to deliver before letting the workers finish.
    #[arg(long, default_value_t = 100)]
    pub(crate) kills: u64,
    /// Keys in the key space (each one step).
    #[arg(long, default_value_t = 500)]
    pub(crate) keys: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// Shortest pause between two kills, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub(crate) min_interval_ms: u64,
    /// Longest pause between two kills, in milliseconds.
    #[arg(long, default_value_t = 40)]
    pub(crate) max_interval_ms: u64,
    /// Longest random sleep at each point inside a step (before each insert, before the
    /// snapshot, before the commit), in milliseconds: widens the windows a kill lands in.
    #[arg(long, default_value_t = 3)]
    pub(crate) max_sleep_ms: u64,
    /// Gives up (exit 1) when the workers have not finished this long after the last kill.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout_secs: u64,
    /// The negative control: the workers check for a completed record, insert the rows on
    /// the pool (autocommit), then run a step that only records the snapshot, the mistake the
    /// transactional step exists to prevent. A kill between the two leaves rows without a
    /// snapshot, and the next execution adds another set: the run must fail.
    #[arg(long)]
    pub(crate) outside_tx: bool,
    /// Seed of the parent's choices (kill intervals and victims); workers seed from their pid.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Worker mode: this worker's number (set by the parent).
    #[arg(long, hide = true)]
    pub(crate) worker: Option<usize>,
    /// Worker mode: the run's name (its table, schemas and operation).
    #[arg(long, hide = true)]
    pub(crate) run: Option<String>,
}

/// Exit status of a failed check or a broken run.
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit status when the store's server cannot be reached (tests skip on it).
pub(crate) const EXIT_UNREACHABLE: i32 = 3;

/// Prints what failed and exits 1.
pub(crate) fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("torture: {what}: {e}");
    std::process::exit(EXIT_FAILED)
}

/// Where one run keeps its things. A run never shares a table, schema or operation with
/// another, so runs on one database (or one SQLite file) do not see each other's records.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// The run's name: `<pid>_<unix seconds>`.
    pub(crate) name: String,
    /// The idem store's URL (on PostgreSQL with the run's `idem_schema`).
    pub(crate) store_url: String,
    /// The application pool's URL: the store URL without idem's own parameters.
    pub(crate) app_url: String,
    /// The application table, qualified.
    pub(crate) table: String,
    /// The application schema (PostgreSQL only): dropped with the run.
    pub(crate) schema: Option<String>,
    /// The steps' operation.
    pub(crate) op: String,
}

impl Run {
    /// The run named `name` on the store `url` (as the user gave it).
    pub(crate) fn new(url: &str, name: &str) -> Self {
        let app_url = without_idem_params(url);
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        let (store_url, table, schema) = if postgres {
            let schema = format!("torture_{name}");
            let sep = if app_url.contains('?') { '&' } else { '?' };
            (
                format!("{app_url}{sep}idem_schema={schema}_idem&idem_max_connections=2"),
                format!("\"{schema}\".rows"),
                Some(schema),
            )
        } else {
            (url.to_owned(), format!("torture_{name}_rows"), None)
        };
        Self {
            name: name.to_owned(),
            store_url,
            app_url,
            table,
            schema,
            op: format!("torture.save.{name}"),
        }
    }

    /// The key string of key number `i`.
    pub(crate) fn key(i: u64) -> String {
        format!("k{i}")
    }

    /// The file each execution of a step body appends one byte to (O_APPEND: one atomic
    /// write): executions started, so the parent can count those a kill cut short.
    pub(crate) fn starts_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("idem-torture-{}.starts", self.name))
    }

    /// The step's call for key `key`.
    pub(crate) fn call(&self, key: &str) -> idem_runtime::Call {
        idem_runtime::Call::new(self.op.clone()).key(key)
    }
}

/// `url` without its `idem_*` query parameters, which sqlx does not know.
fn without_idem_params(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("idem_"))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The application's own pool on the store's database.
#[derive(Debug, Clone)]
pub(crate) enum App {
    /// SQLite: one connection per worker process (SQLite has one writer anyway).
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl App {
    /// Connects to the run's database.
    pub(crate) async fn connect(run: &Run) -> Result<Self, sqlx::Error> {
        #[cfg(feature = "postgres")]
        if run.schema.is_some() {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(60))
                .connect(&run.app_url)
                .await?;
            return Ok(App::Postgres(pool));
        }
        #[cfg(not(feature = "postgres"))]
        if run.schema.is_some() {
            return Err(sqlx::Error::Configuration(
                "idem-examples was built without its `postgres` feature".into(),
            ));
        }
        // Waits out the other workers' transactions instead of failing with SQLITE_BUSY: the
        // step claims with a write as its first statement, so the busy handler applies.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&run.app_url)?
            .busy_timeout(Duration::from_secs(60));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(90))
            .connect_with(options)
            .await?;
        Ok(App::Sqlite(pool))
    }
}

/// SplitMix64: enough randomness for kill intervals, victims, key orders and sleeps, without a
/// dependency, and reproducible from `--seed`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the clock and the process id.
    pub(crate) fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo + 1)
    }

    /// Shuffles `items` (Fisher-Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// A step's recorded value: which execution wrote the key's rows, and how many. The check
/// compares it with the rows in the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Snap {
    /// The execution's id (a fresh UUID per run of the body), in every row it inserts.
    pub(crate) exec: String,
    /// How many rows it inserted (1 to 3).
    pub(crate) rows: u32,
}
