//! Fills a store's records table to a given size before a benchmark (`bench --prefill N`), by
//! bulk SQL in the store's own row format: one `INSERT ... SELECT` per million rows from
//! `generate_series` (PostgreSQL) or a recursive CTE (SQLite), never through the store's API, so
//! ten million records take minutes.
//!
//! The mix, by row number modulo 100: `expired_pct` completed records whose `expires_at` has
//! passed (what purge deletes), `running_pct` running records whose lease ended two hours ago
//! (abandoned: purge deletes them too, with the default `--abandoned-after 1h`), and the rest
//! completed records that expire in seven days. Four operations, `prefill.a` to `prefill.d`, a
//! quarter each. Keys are random, so a fill never collides with a benchmark's keys, and a store
//! already holding `n` records (of any kind) is left as it is.

use std::time::Instant;

/// What share of the filled rows is expired and abandoned (percent; the rest are live
/// completed records).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Completed records past their `expires_at`.
    pub expired_pct: u32,
    /// Running records whose lease expired two hours ago.
    pub running_pct: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            expired_pct: 15,
            running_pct: 5,
        }
    }
}

/// What a fill did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Filled {
    /// Records in the table before the fill.
    pub before: u64,
    /// Records the fill added (0: the table already held enough).
    pub added: u64,
    /// Seconds the fill took (inserts, then VACUUM ANALYZE on PostgreSQL, ANALYZE on SQLite).
    pub seconds: f64,
}

/// Rows per INSERT statement: progress survives an interrupted fill, and no statement's WAL or
/// sort grows with `n`.
const CHUNK: u64 = 1_000_000;

/// The row of number `i` in PostgreSQL, as the SELECT list of the records table's columns
/// (`key, op, status, attempt, snapshot, snapshot_kind, lease_until, worker, created_at,
/// updated_at, expires_at, attempt_started_at, attempt_outcome`). `t` is the row's age base.
fn postgres_row(mix: Mix) -> String {
    let expired = mix.expired_pct;
    let running = mix.expired_pct + mix.running_pct;
    format!(
        "decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
         'prefill.' || chr(97 + ((i / 100) % 4)::int),
         CASE WHEN i % 100 >= {expired} AND i % 100 < {running} THEN 'running' ELSE 'completed' END,
         1,
         CASE WHEN i % 100 >= {expired} AND i % 100 < {running} THEN NULL
              ELSE convert_to('{{\"call\":' || i || '}}', 'UTF8') END,
         CASE WHEN i % 100 >= {expired} AND i % 100 < {running} THEN NULL ELSE 'ok' END,
         CASE WHEN i % 100 >= {expired} AND i % 100 < {running}
              THEN t + interval '30 seconds' END,
         'prefill', t, t + interval '5 milliseconds',
         CASE WHEN i % 100 < {expired} THEN now() - interval '1 hour'
              ELSE now() + interval '7 days' END,
         t,
         CASE WHEN i % 100 >= {expired} AND i % 100 < {running} THEN 'running' ELSE 'completed' END"
    )
}

/// Fills the PostgreSQL table `records` (schema-qualified, quoted) to `n` records.
#[cfg(feature = "postgres")]
pub async fn postgres(
    pool: &sqlx::PgPool,
    records: &str,
    n: u64,
    mix: Mix,
) -> Result<Filled, sqlx::Error> {
    let started = Instant::now();
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {records}"))
        .fetch_one(pool)
        .await?;
    let before = u64::try_from(count).unwrap_or(0);
    let mut at = before;
    let insert = format!(
        "INSERT INTO {records} (key, op, status, attempt, snapshot, snapshot_kind, lease_until,
                                worker, created_at, updated_at, expires_at, attempt_started_at,
                                attempt_outcome)
         SELECT {}
         FROM (SELECT i, now() - interval '2 hours' - (i % 86400000) * interval '1 millisecond' AS t
               FROM generate_series($1::int8, $2::int8 - 1) i) s
         -- In key order: the primary key's B-tree fills leaf by leaf instead of at random.
         ORDER BY 1",
        postgres_row(mix)
    );
    while at < n {
        let end = (at + CHUNK).min(n);
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&insert)
            .bind(at as i64)
            .bind(end as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        at = end;
    }
    if before < n {
        // Sets the visibility map (index-only scans) and the planner's statistics, as
        // autovacuum would on a table that grew over days.
        sqlx::query(&format!("VACUUM (ANALYZE) {records}"))
            .execute(pool)
            .await?;
    }
    Ok(Filled {
        before,
        added: n.saturating_sub(before),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fills a SQLite store's records table to `n` records (times in milliseconds, as the store
/// keeps them).
pub async fn sqlite(pool: &sqlx::SqlitePool, n: u64, mix: Mix) -> Result<Filled, sqlx::Error> {
    let started = Instant::now();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM idem_records")
        .fetch_one(pool)
        .await?;
    let before = u64::try_from(count).unwrap_or(0);
    let expired = mix.expired_pct;
    let running = mix.expired_pct + mix.running_pct;
    let is_running = format!("i % 100 >= {expired} AND i % 100 < {running}");
    let now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    let insert = format!(
        "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?2),
              r(i, t) AS (SELECT i, {now} - 7200000 - i % 86400000 FROM s)
         INSERT INTO idem_records (key, op, status, attempt, snapshot, snapshot_kind,
                                   lease_until, worker, created_at, updated_at, expires_at,
                                   attempt_started_at, attempt_outcome)
         SELECT randomblob(32), 'prefill.' || char(97 + (i / 100) % 4),
                CASE WHEN {is_running} THEN 'running' ELSE 'completed' END, 1,
                CASE WHEN {is_running} THEN NULL ELSE CAST('{{\"call\":' || i || '}}' AS BLOB) END,
                CASE WHEN {is_running} THEN NULL ELSE 'ok' END,
                CASE WHEN {is_running} THEN t + 30000 END,
                'prefill', t, t + 5,
                CASE WHEN i % 100 < {expired} THEN {now} - 3600000
                     ELSE {now} + 7 * 86400000 END,
                t, CASE WHEN {is_running} THEN 'running' ELSE 'completed' END
         FROM r ORDER BY 1"
    );
    let mut at = before;
    while at < n {
        let end = (at + CHUNK).min(n);
        sqlx::query(&insert)
            .bind(at as i64)
            .bind(end as i64)
            .execute(pool)
            .await?;
        at = end;
    }
    if before < n {
        sqlx::query("ANALYZE").execute(pool).await?;
    }
    Ok(Filled {
        before,
        added: n.saturating_sub(before),
        seconds: started.elapsed().as_secs_f64(),
    })
}
