//! The side-effect table in the store's database: one row per handler execution.

use sqlx::{PgPool, SqlitePool};

/// The application's pool on the store's database.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub(crate) async fn connect(url: &str, connections: u32) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let options = options
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(connections)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        }
    }

    pub(crate) async fn create(&self) -> Result<(), sqlx::Error> {
        let sql =
            "CREATE TABLE IF NOT EXISTS consumer_effects (run TEXT NOT NULL, msg_id TEXT NOT NULL)";
        match self {
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
    }

    /// (side effects, distinct messages with an effect) of a run.
    pub(crate) async fn effects(&self, run: &str) -> Result<(i64, i64), sqlx::Error> {
        let sql = "SELECT count(*), count(DISTINCT msg_id) FROM consumer_effects WHERE run = $1";
        match self {
            Db::Sqlite(p) => sqlx::query_as(sql).bind(run).fetch_one(p).await,
            Db::Postgres(p) => sqlx::query_as(sql).bind(run).fetch_one(p).await,
        }
    }

    /// The effect of one message, outside any transaction (the consumer without idem).
    pub(crate) async fn insert(&self, run: &str, msg_id: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO consumer_effects (run, msg_id) VALUES ($1, $2)";
        match self {
            Db::Sqlite(p) => sqlx::query(sql)
                .bind(run)
                .bind(msg_id)
                .execute(p)
                .await
                .map(|_| ()),
            Db::Postgres(p) => sqlx::query(sql)
                .bind(run)
                .bind(msg_id)
                .execute(p)
                .await
                .map(|_| ()),
        }
    }

    pub(crate) async fn delete_run(&self, run: &str) -> Result<(), sqlx::Error> {
        let sql = "DELETE FROM consumer_effects WHERE run = $1";
        match self {
            Db::Sqlite(p) => sqlx::query(sql).bind(run).execute(p).await.map(|_| ()),
            Db::Postgres(p) => sqlx::query(sql).bind(run).execute(p).await.map(|_| ()),
        }
    }
}
