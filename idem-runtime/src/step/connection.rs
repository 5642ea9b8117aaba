//! What a step can run on: the caller's own sqlx connection or transaction, of SQLite or
//! PostgreSQL. Sealed: the store behind the `Idem` handle must speak the same database.

use sqlx::pool::PoolConnection;
use sqlx::Transaction;

/// A `&mut` of one of these is what `Idem::step` and `#[idempotent(tx = ...)]` take: the claim,
/// the body's writes and the snapshot all go through it, and commit or roll back with the
/// caller's transaction.
///
/// Implemented for sqlx's `Transaction`, `PoolConnection` and bare connections of SQLite
/// (feature `sqlite`) and PostgreSQL (feature `postgres`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sqlx connection or transaction a step can run on",
    label = "a step runs its claim, the body's writes and the snapshot on this",
    note = "pass `&mut` a `sqlx::Transaction<'_, Postgres>` (`PgTransaction`), `sqlx::Transaction<'_, Sqlite>`, a `PoolConnection` or a bare `PgConnection` / `SqliteConnection`"
)]
pub trait StepConnection: sealed::Sealed + Send {}

/// The connection of a step, by database.
#[doc(hidden)]
#[derive(Debug)]
pub enum Conn<'a> {
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
    /// Never built: keeps the lifetime used when only one database is enabled.
    #[allow(dead_code)]
    Neither(std::marker::PhantomData<&'a mut ()>),
}

pub(crate) mod sealed {
    /// Not implementable outside idem: the step engine must know the database.
    pub trait Sealed {
        /// The connection to run the step's statements on.
        #[doc(hidden)]
        fn step_conn(&mut self) -> super::Conn<'_>;
    }
}

macro_rules! step_connections {
    ($feature:literal, $db:ty, $conn:ty, $variant:ident) => {
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $conn {
            fn step_conn(&mut self) -> Conn<'_> {
                Conn::$variant(self)
            }
        }
        #[cfg(feature = $feature)]
        impl StepConnection for $conn {}

        #[cfg(feature = $feature)]
        impl sealed::Sealed for Transaction<'_, $db> {
            fn step_conn(&mut self) -> Conn<'_> {
                Conn::$variant(&mut **self)
            }
        }
        #[cfg(feature = $feature)]
        impl StepConnection for Transaction<'_, $db> {}

        #[cfg(feature = $feature)]
        impl sealed::Sealed for PoolConnection<$db> {
            fn step_conn(&mut self) -> Conn<'_> {
                Conn::$variant(&mut **self)
            }
        }
        #[cfg(feature = $feature)]
        impl StepConnection for PoolConnection<$db> {}
    };
}

step_connections!("sqlite", sqlx::Sqlite, sqlx::SqliteConnection, Sqlite);
step_connections!("postgres", sqlx::Postgres, sqlx::PgConnection, Postgres);
