//! Opening a [`SqliteStore`]: the builder, the refusal of an empty path, WAL and the busy
//! timeout, and the migration (or, for read-only openers, the check) of the tables.

use std::str::FromStr;
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{is_locked, schema, SqliteStore, FORMAT_VERSION};
use crate::error::Error;
use crate::store::redact_url;

/// Options for opening a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    url: String,
    busy_timeout: Duration,
    max_connections: u32,
    migrate: bool,
}

impl SqliteStoreBuilder {
    /// The defaults: a 5 s busy timeout, 8 connections, migrations on.
    pub(super) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            migrate: true,
        }
    }

    /// How long a statement waits for another process's write lock before failing (default 5 s).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The pool size (default 8). SQLite serializes writers; more connections help readers.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Whether opening creates the file and creates or upgrades the tables (default on). Off,
    /// opening creates and changes nothing (no file, no table, no journal-mode switch) and
    /// fails with [`Error::Open`] (`no idem tables in ...`) unless the file exists with this
    /// build's tables: for operators' tools, where a typo must not create an empty store.
    #[must_use]
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Opens (creating the file if needed) and migrates the database; with
    /// [`Self::migrate`]`(false)`, opens an existing one as it is.
    pub async fn open(self) -> Result<SqliteStore, Error> {
        let url = redact_url(&self.url);
        let open_err = |reason: &str, e: sqlx::Error| Error::Open {
            url: url.clone(),
            reason: format!("{reason}: {e}"),
            source: Some(Box::new(e)),
        };
        let mut options = SqliteConnectOptions::from_str(&self.url)
            .map_err(|e| open_err("not a SQLite URL", e))?
            .create_if_missing(self.migrate)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout);
        // An empty path opens a new private temporary database per connection: every pooled
        // connection would see a different, empty store.
        if options.get_filename().as_os_str().is_empty() {
            return Err(Error::Open {
                url,
                reason: "no database file path: write `sqlite://path/to/idem.db` (created on \
                         first use), or `sqlite::memory:` or `memory:` for a store that lives \
                         only in this process"
                    .into(),
                source: None,
            });
        }
        if self.migrate {
            options = options.journal_mode(SqliteJournalMode::Wal);
        } else if !options.get_filename().exists()
            && !self.url.starts_with("sqlite::memory:")
            && !self.url.contains("mode=memory")
        {
            return Err(Error::Open {
                url,
                reason: format!(
                    "no idem tables in `{}`: the file does not exist",
                    options.get_filename().display()
                ),
                source: None,
            });
        }
        let file = options.get_filename().display().to_string();
        let pool_options = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(1)
            // A local file has no network to fail: skip the ping on every acquire.
            .test_before_acquire(false)
            .acquire_timeout(self.busy_timeout + Duration::from_secs(5));
        // Switching a new file to WAL needs an exclusive lock, and SQLite reports a concurrent
        // opener's lock at once (the busy handler does not cover it): retry within the busy
        // timeout, so many processes can create one file at the same moment.
        let attempts = (self.busy_timeout.as_millis() / 20).clamp(1, 1000) as usize;
        let pool = (|| pool_options.clone().connect_with(options.clone()))
            .retry(
                ConstantBuilder::default()
                    .with_delay(Duration::from_millis(20))
                    .with_max_times(attempts)
                    .with_jitter(),
            )
            .when(is_locked)
            .await
            .map_err(|e| open_err("cannot open the database", e))?;
        if !self.migrate {
            let found = async {
                let mut conn = pool.acquire().await?;
                schema::check(&mut conn).await
            }
            .await
            .map_err(|e| open_err("cannot read the database", e))?;
            return match found {
                Some(FORMAT_VERSION) => Ok(SqliteStore::on(pool)),
                Some(version) => Err(Error::Open {
                    url,
                    reason: format!(
                        "the idem tables in `{file}` have format version {version}, this build \
                         reads only {FORMAT_VERSION}; open it once with a build that migrates"
                    ),
                    source: None,
                }),
                None => Err(Error::Open {
                    url,
                    reason: format!("no idem tables in `{file}`"),
                    source: None,
                }),
            };
        }
        SqliteStore::from_pool(pool).await.map_err(|e| match e {
            Error::Store { source, .. } => Error::Open {
                url: url.clone(),
                reason: format!("cannot migrate the database: {source}"),
                source: Some(source),
            },
            other => other,
        })
    }
}
