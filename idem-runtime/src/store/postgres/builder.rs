//! Opening a [`PostgresStore`]: the builder, the URL's store options (`idem_schema`,
//! `idem_table_prefix`, ...), the first connection (failing fast with its cause), and the
//! migration or read-only check of the tables.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::batch::Batches;
use super::conn::Connections;
use super::listen::Notifier;
use super::locks::{Blocked, LOCK_TIMEOUT};
use super::purge::{PurgeCursor, PurgeSql};
use super::schema::{self, Names, FORMAT_VERSION};
use super::sql::Sql;
use super::{Inner, PostgresStore, Source, NO_KEY};
use crate::error::Error;
use crate::store::predict::Predictor;
use crate::store::redact_url;

/// What opening found in the database, when it does not migrate.
enum Found {
    /// This build's tables.
    Ready,
    /// No idem tables under the store's schema and prefix.
    NoTables,
    /// The tables of another format version.
    Version(i32),
}

/// Brings the tables up to date (`migrate`), or checks that they are (read-only).
async fn prepare(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    migrate: bool,
) -> Result<Found, sqlx::Error> {
    if migrate {
        schema::migrate(conn, names).await?;
        return Ok(Found::Ready);
    }
    Ok(match schema::check(conn, names).await? {
        None => Found::NoTables,
        Some(FORMAT_VERSION) => Found::Ready,
        Some(version) => Found::Version(version),
    })
}

/// Options for opening a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    source: Source,
    schema: String,
    table_prefix: String,
    max_connections: u32,
    acquire_timeout: Duration,
    application_name: Option<String>,
    lock_timeout: Duration,
    notifications: bool,
    migrate: bool,
    batch_after: Option<usize>,
}

impl PostgresStoreBuilder {
    /// Options for a store on an application's existing pool. The pool's own settings are kept
    /// (the pool options of this builder apply only to pools it creates).
    pub fn from_pool(pool: PgPool) -> Self {
        Self::with_source(Source::Pool(pool))
    }

    pub(super) fn with_source(source: Source) -> Self {
        Self {
            source,
            schema: "public".into(),
            table_prefix: "idem_".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            application_name: None,
            lock_timeout: LOCK_TIMEOUT,
            notifications: true,
            migrate: true,
            batch_after: None,
        }
    }

    /// The schema holding the tables (default `public`; created by the migration if missing).
    /// Lower-case ASCII letters, digits and `_` only; anything else is [`Error::Config`].
    #[must_use]
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// The prefix of the table names (default `idem_`: `idem_records`, `idem_attempts`, ...).
    /// Lower-case ASCII letters, digits and `_` only, at most 40 bytes; may be empty.
    #[must_use]
    pub fn table_prefix(mut self, prefix: &str) -> Self {
        self.table_prefix = prefix.to_owned();
        self
    }

    /// The pool size (default 10), for pools this builder creates. The change listener uses one
    /// more connection, outside the pool.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a call waits for a connection before failing closed with [`Error::Store`]
    /// (default 5 s), for pools this builder creates.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The `application_name` of the connections this builder creates (default: the URL's
    /// `application_name` parameter, else `idem`).
    #[must_use]
    pub fn application_name(mut self, name: &str) -> Self {
        self.application_name = Some(name.to_owned());
        self
    }

    /// The longest any statement of the store waits for a row lock (default 50 ms), for pools
    /// this builder creates: a claim blocked longer (behind an open transactional step) is
    /// told `running` and waits, or refuses, per its call's options, without holding a
    /// connection; other statements retry (see the module `locks.rs`). Zero: no bound (such a
    /// claim waits in its statement until the step ends, on its connection).
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// While callers wait for the pool: how many claims of new keys (and, separately, how
    /// many completions) this store runs at once, each as its own statement, before further
    /// ones queue and go together as one multi-row statement (default: half the pool's size,
    /// so claims and completions together can fill it). Many callers then share one round
    /// trip, one transaction and one WAL flush. While the pool has room, every call goes alone
    /// at once (batching then only adds a wait). Zero turns batching off.
    #[must_use]
    pub fn batch_after(mut self, statements: usize) -> Self {
        self.batch_after = Some(statements);
        self
    }

    /// Whether waiting callers are woken by LISTEN/NOTIFY (default on); off, they poll.
    #[must_use]
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Whether opening creates or upgrades the tables (default on), and raises the attempt
    /// floor's mirror to the floor if a restore or a switchover left it behind. Off, opening
    /// creates and changes nothing (no schema, no table) and fails with [`Error::Open`]
    /// (`no idem tables in schema ...`) unless this build's tables exist (for roles without DDL
    /// rights, run the migration once with a privileged role; for operators' tools, where a
    /// typo in `idem_schema` must not create an empty store).
    #[must_use]
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Applies the store's own URL query parameters and returns the URL without them.
    fn take_url_options(&mut self, url: &str) -> Result<String, Error> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok(url.to_owned());
        };
        let bad = |reason: String| Error::Open {
            url: redact_url(url),
            reason,
            source: None,
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("`{what}` must be a whole number, not {value:?}")))
            };
            match name {
                "idem_schema" => self.schema = value.to_owned(),
                "idem_table_prefix" => self.table_prefix = value.to_owned(),
                "idem_max_connections" => {
                    self.max_connections = u32::try_from(number(name)?).unwrap_or(u32::MAX).max(1);
                }
                "idem_acquire_timeout_ms" => {
                    self.acquire_timeout = Duration::from_millis(number(name)?)
                }
                "idem_lock_timeout_ms" => self.lock_timeout = Duration::from_millis(number(name)?),
                "idem_batch_after" => {
                    self.batch_after = Some(usize::try_from(number(name)?).unwrap_or(usize::MAX));
                }
                other if other.starts_with("idem_") => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`; expected idem_schema, idem_table_prefix, \
                         idem_max_connections, idem_acquire_timeout_ms, idem_lock_timeout_ms or \
                         idem_batch_after"
                    )))
                }
                _ => kept.push(pair),
            }
        }
        Ok(if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        })
    }

    /// Connects (for a URL), creates or upgrades the tables (or, with [`Self::migrate`]`(false)`,
    /// checks that they exist), and returns the store. A server that cannot be reached fails
    /// at once with the driver's error (`connection refused`, ...) as [`Error::Open`]'s source,
    /// not after a pool's timeout.
    pub async fn open(mut self) -> Result<PostgresStore, Error> {
        let stripped = match &self.source {
            Source::Url(url) => Some(self.take_url_options(&url.clone())?),
            Source::Pool(_) => None,
        };
        // Validated before anything connects.
        let names = Names::new(&self.schema, &self.table_prefix)?;
        let shown = match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Pool(_) => "(the application's pool)".to_owned(),
        };
        let open_err = |reason: &str, e: sqlx::Error| Error::Open {
            url: shown.clone(),
            reason: format!("{reason}: {e}"),
            source: Some(Box::new(e)),
        };
        let (pool, found, owned) = match self.source.clone() {
            Source::Pool(pool) => {
                let found = async {
                    let mut conn = pool.acquire().await?;
                    prepare(&mut conn, &names, self.migrate).await
                }
                .await;
                let found = match found {
                    Ok(found) => found,
                    Err(e) if self.migrate => return Err(Error::store("migrate", "", &NO_KEY, e)),
                    Err(e) => return Err(open_err("cannot read the database", e)),
                };
                (pool, found, false)
            }
            Source::Url(url) => {
                let stripped = stripped.unwrap_or_else(|| url.clone());
                let mut options = PgConnectOptions::from_str(&stripped)
                    .map_err(|e| open_err("not a PostgreSQL URL", e))?;
                if let Some(name) = &self.application_name {
                    options = options.application_name(name);
                } else if options.get_application_name().is_none() {
                    options = options.application_name("idem");
                }
                // The first connection is made directly, not through the pool: a pool retries a
                // refused connection until its acquire timeout and then reports only the
                // timeout, hiding the cause.
                let mut conn = match tokio::time::timeout(
                    self.acquire_timeout,
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
                )
                .await
                {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(open_err("cannot connect", e)),
                    Err(_) => {
                        return Err(Error::Open {
                            url: shown.clone(),
                            reason: format!(
                                "cannot connect: no answer within {:?}",
                                self.acquire_timeout
                            ),
                            source: None,
                        })
                    }
                };
                let found = prepare(&mut conn, &names, self.migrate).await;
                let _ = sqlx::Connection::close(conn).await;
                let found = match found {
                    Ok(found) => found,
                    Err(e) if self.migrate => {
                        return Err(open_err("cannot migrate the database", e))
                    }
                    Err(e) => return Err(open_err("cannot read the database", e)),
                };
                // Every lock wait of the store's own connections is bounded (`locks.rs`); the
                // migration above, which may wait for other workers' open, ran without it.
                // (A sub-millisecond timeout is 1 ms: `0ms` would turn it off.)
                let lock_ms = match self.lock_timeout.as_millis() {
                    0 if !self.lock_timeout.is_zero() => 1,
                    ms => ms,
                };
                let options = options.options([("lock_timeout", format!("{lock_ms}ms"))]);
                let pool = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .min_connections(0)
                    // Statements fail (closed) on a dead connection, and the pool drops it when
                    // it is returned; a ping before every statement would double the round trips.
                    .test_before_acquire(false)
                    .acquire_timeout(self.acquire_timeout)
                    // The server answered just now: the pool's first connection is made here
                    // too, so the first call does not pay for it.
                    .connect_with(options)
                    .await
                    .map_err(|e| open_err("cannot connect", e))?;
                (pool, found, true)
            }
        };
        match found {
            Found::Ready => {}
            Found::NoTables => {
                return Err(Error::Open {
                    url: shown,
                    reason: format!(
                        "no idem tables in schema `{}` (table prefix `{}`)",
                        names.schema, names.prefix
                    ),
                    source: None,
                })
            }
            Found::Version(version) => {
                return Err(Error::Open {
                    url: shown,
                    reason: format!(
                        "the idem tables in schema `{}` have format version {version}, this \
                         build reads only {FORMAT_VERSION}; open it once with a build that \
                         migrates",
                        names.schema
                    ),
                    source: None,
                })
            }
        }
        let notifier = self.notifications.then(|| {
            let listen_pool = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .test_before_acquire(false)
                .acquire_timeout(self.acquire_timeout)
                .connect_lazy_with((*pool.connect_options()).clone());
            Notifier::new(listen_pool, names.channel.clone())
        });
        let sql = Sql::new(&names);
        let batch_after = self.batch_after.unwrap_or_else(|| {
            usize::try_from(pool.options().get_max_connections() / 2)
                .unwrap_or(usize::MAX)
                .max(1)
        });
        let purge_sql = PurgeSql::new(&names);
        let conns = if owned {
            Connections::owned(pool)
        } else {
            Connections::shared(pool)
        };
        let blocked = Arc::new(Blocked::default());
        let batches = Batches::new(&conns, &sql, &blocked, batch_after);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                conns,
                batches,
                names,
                sql,
                notifier,
                predictor: Predictor::default(),
                blocked,
                purge_sql,
                purge_cursor: PurgeCursor::default(),
            }),
        })
    }
}
