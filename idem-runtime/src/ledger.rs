//! The cost ledger's in-process half: what replays of recorded outcomes avoided, summed by
//! operation and unit, and written to the store in batches (every few seconds while a handle is
//! in use, and on [`Idem::flush_costs`](crate::Idem::flush_costs)). What attempts spent needs no
//! batching: it is in each attempt's log line, written with its outcome.
//!
//! A replay of an outcome whose attempt reported no cost touches nothing here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::store::Store;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::Error;
use crate::handle::Handle;
use crate::record::Costs;
use crate::store::AvoidedCost;

/// How often a handle writes the avoided costs its replays counted.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// An (operation, unit) line of the ledger.
type Line = (Cow<'static, str>, String);

/// Avoided costs not yet written, by (operation, unit): (amount, replays).
type Pending = Mutex<HashMap<Line, (f64, u64)>>;

/// Adds `amount` avoided by `replays` replays to `line`.
fn add(pending: &mut HashMap<Line, (f64, u64)>, line: Line, amount: f64, replays: u64) {
    let sums = pending.entry(line).or_insert((0.0, 0));
    sums.0 += amount;
    sums.1 += replays;
}

/// A handle's avoided costs not yet written to its store.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pending: Arc<Pending>,
    /// A task writes `pending` every [`FLUSH_EVERY`] once there is something to write.
    flusher: std::sync::OnceLock<()>,
}

/// Counts a replay of an outcome that cost `cost`: metrics at once, the store in a while.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) is kept without allocating
pub(crate) fn replayed(handle: &Handle, op: &Cow<'static, str>, cost: Option<&Costs>) {
    let Some(cost) = cost.filter(|c| !c.is_empty()) else {
        return;
    };
    crate::metrics::cost_avoided(op, cost);
    {
        let mut pending = handle.ledger.pending.lock();
        for (unit, amount) in &cost.0 {
            add(&mut pending, (op.clone(), unit.clone()), *amount, 1);
        }
    }
    handle.ledger.flusher.get_or_init(|| {
        start_flusher(Arc::downgrade(&handle.ledger.pending), handle.store.clone())
    });
}

/// Writes what is pending to the store (and keeps it pending if the store refuses).
pub(crate) async fn flush(handle: &Handle) -> Result<(), Error> {
    flush_pending(&handle.ledger.pending, &*handle.store).await
}

async fn flush_pending(pending: &Pending, store: &dyn Store) -> Result<(), Error> {
    let taken = std::mem::take(&mut *pending.lock());
    if taken.is_empty() {
        return Ok(());
    }
    let lines: Vec<AvoidedCost> = taken
        .iter()
        .map(|((op, unit), (amount, replays))| AvoidedCost {
            op: op.to_string(),
            unit: unit.clone(),
            amount: *amount,
            replays: *replays,
        })
        .collect();
    if let Err(e) = store.add_avoided(&lines).await {
        // Put it back, added to whatever was counted meanwhile: counted once, later.
        let mut pending = pending.lock();
        for (line, (amount, replays)) in taken {
            add(&mut pending, line, amount, replays);
        }
        return Err(e);
    }
    Ok(())
}

/// Every [`FLUSH_EVERY`], writes the pending avoided costs, until the handle is dropped (then
/// once more). Outside a Tokio runtime nothing is spawned: `Idem::flush_costs` still writes.
fn start_flusher(pending: Weak<Pending>, store: Arc<dyn Store>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(FLUSH_EVERY);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(pending) = pending.upgrade() else {
                return;
            };
            if let Err(error) = flush_pending(&pending, &*store).await {
                tracing::warn!(%error, "idem: could not write avoided costs; will retry");
            }
        }
    });
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.ledger.pending.lock().is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pending, store) = (self.ledger.pending.clone(), self.store.clone());
        runtime.spawn(async move {
            if let Err(error) = flush_pending(&pending, &*store).await {
                tracing::warn!(%error, "idem: could not write avoided costs at shutdown");
            }
        });
    }
}
