//! The transactional outbox: a step enqueues messages in the store's database, in the
//! caller's transaction, and a [`Relay`] publishes them with their id as the broker's message id.
//!
//! - here: [`Outbox`] (the table, `enqueue` on the caller's connection).
//! - `sql.rs`: the table and statements, per database.
//! - `relay.rs`: [`Relay`], which publishes pending messages and marks them sent.
//!
//! A relay killed between a publish and its mark publishes that message again: at-least-once
//! publication, with the same id, which JetStream's de-duplication window and, beyond it, an
//! idem consumer (keyed by the message id) de-duplicate. Exactly-once effects end to end.

mod relay;
mod sql;

use serde::Serialize;

pub use self::relay::Relay;
use self::sql::Db;
use crate::error::Error;
use crate::idem::Idem;
use crate::step::StepConnection;
use crate::store::SqlStore;

/// The outbox table of an idem store's database: `idem_outbox` on SQLite,
/// `"<schema>"."<prefix>outbox"` on PostgreSQL (beside the store's tables).
///
/// ```
/// use idem_runtime::{outbox::Outbox, Call, Error, Idem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
/// # let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
/// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let idem = Idem::open(&url).await?;
/// let outbox = Outbox::open(&idem).await?; // creates the table if needed
/// let pool = sqlx::SqlitePool::connect(&url).await?;
/// for _ in 0..2 {
///     let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
///     idem.step(Call::new("orders.place").key("order-7"), &mut tx, |tx| {
///         let outbox = outbox.clone();
///         Box::pin(async move {
///             // ... the order's own writes on `tx` ...
///             outbox.enqueue(tx, "orders.placed", &"order-7").await // id: the step's key
///         })
///     })
///     .await?;
///     tx.commit().await?;
/// }
/// assert_eq!(outbox.pending().await?, 1); // the replayed step enqueued nothing
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
}

impl Outbox {
    /// The outbox of `idem`'s store (SQLite or PostgreSQL), creating its table if needed.
    pub async fn open(idem: &Idem) -> Result<Self, Error> {
        let db =
            match idem.store().sql_store() {
                #[cfg(feature = "sqlite")]
                Some(SqlStore::Sqlite(store)) => Db::sqlite(store.pool().clone()),
                #[cfg(feature = "postgres")]
                Some(SqlStore::Postgres(store)) => {
                    Db::postgres(store.pool().clone(), store.schema(), store.table_prefix())
                }
                _ => return Err(Error::Config(
                    "the outbox needs a SQLite or PostgreSQL store: its messages commit in the \
                     database of the store"
                        .into(),
                )),
            };
        db.create().await?;
        Ok(Self { db })
    }

    /// Enqueues `payload` (as JSON) for `destination` (a subject or routing key), on the
    /// caller's connection or transaction `conn`: it commits or rolls back with it. Called in a
    /// step's body, the message id is the step's key (hex) and the destination
    /// (`<key>.<destination>`): a replay of the step enqueues nothing, and a re-run after a
    /// rollback enqueues the same id. Outside a step, use [`Outbox::enqueue_with_id`].
    pub async fn enqueue<C, T>(
        &self,
        conn: &mut C,
        destination: &str,
        payload: &T,
    ) -> Result<(), Error>
    where
        C: StepConnection + ?Sized,
        T: Serialize + ?Sized,
    {
        let Some(call) = crate::current() else {
            return Err(Error::Config(format!(
                "Outbox::enqueue for `{destination}` outside a step has no key to use as the \
                 message id: call it in the step's body, or use Outbox::enqueue_with_id"
            )));
        };
        let id = format!("{}.{destination}", call.key.to_hex());
        self.enqueue_with_id(conn, destination, &id, payload).await
    }

    /// Enqueues `payload` with message id `id` (several messages of one step need ids of their
    /// own). Enqueuing an id already in the outbox changes nothing.
    pub async fn enqueue_with_id<C, T>(
        &self,
        conn: &mut C,
        destination: &str,
        id: &str,
        payload: &T,
    ) -> Result<(), Error>
    where
        C: StepConnection + ?Sized,
        T: Serialize + ?Sized,
    {
        let bytes = serde_json::to_vec(payload).map_err(|e| {
            Error::Config(format!(
                "the outbox message {id} for `{destination}` cannot be encoded: {e}"
            ))
        })?;
        let conn = crate::step::conn_of::<C>()(conn);
        self.db.insert(conn, id, destination, &bytes).await
    }

    /// How many messages are waiting to be published.
    pub async fn pending(&self) -> Result<u64, Error> {
        self.db.pending().await
    }

    /// Deletes the messages published at least `older_than` ago; returns how many.
    pub async fn purge_sent(&self, older_than: std::time::Duration) -> Result<u64, Error> {
        self.db.purge_sent(older_than).await
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}
