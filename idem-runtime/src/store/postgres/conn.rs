//! Connections the store keeps checked out of its own pool between hot statements, so a claim or
//! a completion does not pay sqlx's release round trip.
//!
//! sqlx tests every connection given back to a pool with a round trip (`return_to_pool` ->
//! `ping`, a Sync message, on a spawned task): per statement, one more message for the server to
//! answer and one more wake-up on each side. Measured on the hit path (one client): one Sync
//! sent and one ReadyForQuery read per claim, on another connection than the claim's own.
//!
//! A store that created its pool keeps each connection whose statements finished on a small
//! LIFO stack and hands it to the next statement at once. Anything else goes back through sqlx,
//! ping and all: a statement whose future was dropped mid-way, any error. A connection still
//! inside a transaction (as sqlx counts them) is rolled back first. While any of the store's
//! callers waits for the pool, finished connections go back to the pool, which serves its
//! oldest waiter: the stack would only serve newcomers, and a waiter would time out.
//! Connections idle on the stack longer than [`IDLE`] are given back to the pool by a sweeper,
//! and each one is given back at least every [`HOLD`], so the pool's own rules (its idle
//! timeout, its connection lifetime, [`super::PostgresStore::pool`] users) see every connection
//! soon.
//!
//! A store on an application's pool keeps nothing: that pool is the application's to manage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgTransactionManager};
use sqlx::{Postgres, TransactionManager};

/// How long a connection may wait on the stack before the sweeper gives it back to the pool.
const IDLE: Duration = Duration::from_millis(250);
/// How long a connection may stay checked out of the pool in all, however busy.
const HOLD: Duration = Duration::from_secs(60);

/// A connection on the stack: since when it is checked out, since when it is idle.
#[derive(Debug)]
struct Kept {
    conn: PoolConnection<Postgres>,
    checked_out: Instant,
    idle_since: Instant,
}

/// The kept connections, and whether the store is closing (then nothing more is kept).
#[derive(Debug, Default)]
struct Stack {
    kept: Vec<Kept>,
    closed: bool,
}

/// The store's pool and the connections kept out of it.
#[derive(Debug)]
pub(super) struct Connections {
    pool: PgPool,
    /// `None`: keep nothing (an application's pool).
    stack: Option<Mutex<Stack>>,
    /// Callers of this store waiting for the pool: while any waits, a finished connection goes
    /// back to the pool (which hands it to the oldest waiter) instead of onto the stack, where
    /// only newcomers would find it.
    waiting: AtomicUsize,
}

impl Connections {
    /// Connections of a pool the store created: clean ones are kept, and a sweeper (which ends
    /// with the store) gives idle ones back.
    pub(super) fn owned(pool: PgPool) -> Arc<Self> {
        let this = Arc::new(Self {
            pool,
            stack: Some(Mutex::new(Stack::default())),
            waiting: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(sweep(weak));
        this
    }

    /// Connections of an application's pool: each statement acquires and releases as usual.
    pub(super) fn shared(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            stack: None,
            waiting: AtomicUsize::new(0),
        })
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection: the most recently used kept one, else one from the pool.
    pub(super) async fn get(self: &Arc<Self>) -> Result<Held, sqlx::Error> {
        let kept = self.stack.as_ref().and_then(|s| lock(s).kept.pop());
        let (conn, checked_out) = match kept {
            Some(k) => (k.conn, k.checked_out),
            None => {
                let _waiting = Waiting::on(&self.waiting);
                (self.pool.acquire().await?, Instant::now())
            }
        };
        Ok(Held {
            owner: self.clone(),
            conn,
            checked_out,
        })
    }

    /// Whether callers of this store wait for the pool right now (then more statements are
    /// pending than the pool can run, and batching them pays; see `batch.rs`).
    pub(super) fn callers_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0 && self.pool.num_idle() == 0
    }

    /// Gives every kept connection back to the pool and keeps none from now on (before the
    /// pool closes, which waits for all of them).
    pub(super) fn give_back_all(&self) {
        if let Some(stack) = &self.stack {
            let kept = {
                let mut stack = lock(stack);
                stack.closed = true;
                std::mem::take(&mut stack.kept)
            };
            drop(kept);
        }
    }

    /// Gives back the connections idle longer than [`IDLE`] (the oldest are at the bottom).
    fn give_back_idle(&self) {
        let Some(stack) = &self.stack else { return };
        let stale: Vec<Kept> = {
            let mut stack = lock(stack);
            let fresh_from = stack
                .kept
                .iter()
                .position(|k| k.idle_since.elapsed() < IDLE)
                .unwrap_or(stack.kept.len());
            stack.kept.drain(..fresh_from).collect()
        };
        // Dropped outside the lock: each drop spawns sqlx's release.
        drop(stale);
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // A kept connection given back to sqlx spawns its release, which needs a runtime: a
        // store dropped outside one (after `block_on` returned) closes them instead.
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(stack) = &self.stack {
                for kept in std::mem::take(&mut lock(stack).kept) {
                    drop(kept.conn.detach());
                }
            }
        }
    }
}

/// Counts one caller waiting for the pool, for as long as it lives (a cancelled wait too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection checked out for one statement (or one claim's few, or one transactional
/// step). Dropped without [`Held::done`] (an error, a cancelled call), it goes back through
/// sqlx.
#[derive(Debug)]
pub(super) struct Held {
    owner: Arc<Connections>,
    conn: PoolConnection<Postgres>,
    checked_out: Instant,
}

impl Held {
    /// The connection, to run statements on.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Ends the use after its statements finished (with rows, no rows or a database error
    /// the caller handled: the protocol is then at a clean ReadyForQuery). The connection goes
    /// on the stack; or back to the pool when someone waits there, when it has been out long
    /// enough, or when the store is closing; or, if it is still inside a transaction, through
    /// [`Held::roll_back_and_done`].
    pub(super) fn done(self) {
        if PgTransactionManager::get_transaction_depth(&self.conn) > 0 {
            self.roll_back_and_done();
            return;
        }
        let Some(stack) = &self.owner.stack else {
            return;
        };
        if self.owner.waiting.load(Ordering::SeqCst) > 0 || self.checked_out.elapsed() >= HOLD {
            return;
        }
        let mut stack = lock(stack);
        if !stack.closed {
            stack.kept.push(Kept {
                conn: self.conn,
                checked_out: self.checked_out,
                idle_since: Instant::now(),
            });
        }
    }

    /// Gives the connection back after a transaction on it that may still be open (an
    /// abandoned step, a step whose claim only read): rolled back first, on a spawned task off
    /// the caller's path, as sqlx does for its own dropped transactions. A connection that
    /// cannot roll back is closed, never returned with a transaction open.
    pub(super) fn roll_back_and_done(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.close();
            return;
        };
        runtime.spawn(roll_back(self));
    }

    /// Closes the connection: out of the pool, so the server ends whatever it was doing.
    fn close(self) {
        drop(self.conn.detach());
    }
}

/// Rolls back every level sqlx knows of; when it knows of none, sends a plain `ROLLBACK` anyway
/// for the one case it misses (a `BEGIN` whose caller was cancelled before sqlx counted it; the
/// server only warns if no transaction is open). Boxed as `Send`: the compiler cannot prove it
/// for sqlx's higher-ranked executor bounds through an unboxed `async` block handed to `spawn`.
fn roll_back(mut held: Held) -> futures_util::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let rolled_back = if PgTransactionManager::get_transaction_depth(held.conn()) == 0 {
            sqlx::Executor::execute(held.conn(), "ROLLBACK")
                .await
                .is_ok()
        } else {
            let mut ok = true;
            while ok && PgTransactionManager::get_transaction_depth(held.conn()) > 0 {
                ok = PgTransactionManager::rollback(held.conn()).await.is_ok();
            }
            ok
        };
        if rolled_back {
            held.done();
        } else {
            held.close();
        }
    })
}

fn lock(stack: &Mutex<Stack>) -> MutexGuard<'_, Stack> {
    // Nothing panics while holding it; a poisoned stack is still a valid stack.
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives idle connections back every [`IDLE`], until the store is gone.
async fn sweep(connections: Weak<Connections>) {
    let mut tick = tokio::time::interval(IDLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        if connections.pool.is_closed() {
            connections.give_back_all();
            return;
        }
        connections.give_back_idle();
    }
}
