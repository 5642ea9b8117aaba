//! Coalescing concurrent statements of one kind: while a few are in flight, newcomers queue, and
//! the next statement to go carries every queued one (see `batch.rs` for the statements).
//!
//! A lone caller never waits for company: below `in_flight` statements it runs its own
//! statement at once (the single-row path, unchanged). Above it, it queues; when an in-flight
//! statement ends, the queue (up to `max_batch` entries) leaves in one statement, run by a
//! spawned driver task that keeps going while entries keep queueing. The driver, not a caller,
//! runs a batch, so a caller whose future is dropped cannot take the others' answers with it:
//! an entry is answered once its statement has ended, whatever happens to the callers.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// One queued entry: its data and where its answer goes.
pub(super) struct Entry<T, R> {
    pub(super) item: T,
    pub(super) reply: oneshot::Sender<Option<R>>,
}

struct State<T, R> {
    in_flight: usize,
    queue: VecDeque<Entry<T, R>>,
}

/// The queue of one statement kind.
pub(super) struct Combiner<T, R> {
    state: Mutex<State<T, R>>,
    in_flight: usize,
    max_batch: usize,
}

impl<T, R> std::fmt::Debug for Combiner<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner")
            .field("in_flight", &self.in_flight)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// How a caller goes: alone now (holding a [`Turn`] that it must end), or answered later.
pub(super) enum Way<T: Send + 'static, R: Send + 'static> {
    Alone(Turn<T, R>),
    /// `Some`: the batch's answer; `None` (or a closed channel): the batch could not decide
    /// this entry, so the caller runs its own statement.
    Queued(oneshot::Receiver<Option<R>>),
}

/// A caller's permission to run its own statement. Its drop hands the queue, if any, to a
/// driver task (also when the caller's future is dropped mid-statement).
pub(super) struct Turn<T: Send + 'static, R: Send + 'static> {
    combiner: Arc<Combiner<T, R>>,
    run: Runner<T, R>,
}

/// Runs one batch and answers each entry.
pub(super) type Runner<T, R> = Arc<
    dyn Fn(Vec<Entry<T, R>>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

impl<T: Send + 'static, R: Send + 'static> Combiner<T, R> {
    /// `in_flight`: how many statements of this kind may run at once before callers queue
    /// (0 turns coalescing off: every caller goes alone).
    pub(super) fn new(in_flight: usize, max_batch: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                queue: VecDeque::new(),
            }),
            in_flight,
            max_batch: max_batch.max(1),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<T, R>> {
        // Nothing that can panic runs under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a caller: alone when fewer than `in_flight` statements run, else queued with the
    /// item `make` builds (only then is it built: the lone path copies nothing).
    pub(super) fn enter(
        self: &Arc<Self>,
        run: &Runner<T, R>,
        make: impl FnOnce() -> T,
    ) -> Way<T, R> {
        let mut state = self.state();
        if self.in_flight == 0 || state.in_flight < self.in_flight {
            state.in_flight += 1;
            return Way::Alone(Turn {
                combiner: Arc::clone(self),
                run: Arc::clone(run),
            });
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push_back(Entry {
            item: make(),
            reply,
        });
        Way::Queued(answer)
    }

    /// A statement ended: the queue leaves with a driver, or one fewer statement runs.
    fn ended(self: &Arc<Self>, run: &Runner<T, R>) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let (combiner, run) = (Arc::clone(self), Arc::clone(run));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let mut batch = batch;
                    while !batch.is_empty() {
                        run(batch).await;
                        batch = combiner.take();
                    }
                });
            }
            // No runtime (dropped outside one): the queued callers each run their own
            // statement when their channel closes.
            Err(_) => {
                drop(batch);
                combiner.state().in_flight -= 1;
            }
        }
    }

    /// The next batch (callers whose futures are gone are left out), or, with an empty queue,
    /// one statement fewer in flight.
    fn take(&self) -> Vec<Entry<T, R>> {
        let mut state = self.state();
        let mut batch = Vec::new();
        while batch.len() < self.max_batch {
            match state.queue.pop_front() {
                Some(entry) if entry.reply.is_closed() => {}
                Some(entry) => batch.push(entry),
                None => break,
            }
        }
        if batch.is_empty() {
            state.in_flight -= 1;
        }
        batch
    }
}

impl<T: Send + 'static, R: Send + 'static> Drop for Turn<T, R> {
    fn drop(&mut self) {
        self.combiner.ended(&self.run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn runner(batches: Arc<Mutex<Vec<usize>>>) -> Runner<u32, u32> {
        Arc::new(move |entries: Vec<Entry<u32, u32>>| {
            let batches = Arc::clone(&batches);
            Box::pin(async move {
                tokio::task::yield_now().await;
                batches.lock().unwrap().push(entries.len());
                for e in entries {
                    let _ = e.reply.send(Some(e.item * 10));
                }
            })
        })
    }

    #[tokio::test]
    async fn a_lone_caller_goes_alone_and_queued_ones_go_together() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let run = runner(Arc::clone(&batches));
        let combiner = Combiner::new(1, 100);
        let Way::Alone(turn) = combiner.enter(&run, || 0) else {
            panic!("the first caller must go alone");
        };
        let mut answers = Vec::new();
        for i in 1..=5 {
            match combiner.enter(&run, || i) {
                Way::Queued(rx) => answers.push(rx),
                Way::Alone(_) => panic!("a second caller must queue while one runs"),
            }
        }
        drop(turn);
        for (i, rx) in answers.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap(), Some((i as u32 + 1) * 10));
        }
        assert_eq!(*batches.lock().unwrap(), vec![5]);
        // The driver gave its slot back: the next caller goes alone again.
        assert!(matches!(combiner.enter(&run, || 9), Way::Alone(_)));
    }

    #[tokio::test]
    async fn dropped_callers_are_left_out_and_batches_are_bounded() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let run = runner(Arc::clone(&batches));
        let combiner = Combiner::new(1, 2);
        let Way::Alone(turn) = combiner.enter(&run, || 0) else {
            panic!("alone");
        };
        let mut kept = Vec::new();
        for i in 1..=5 {
            let Way::Queued(rx) = combiner.enter(&run, || i) else {
                panic!("queued");
            };
            if i == 2 {
                drop(rx);
            } else {
                kept.push(rx);
            }
        }
        drop(turn);
        for rx in kept {
            assert!(rx.await.unwrap().is_some());
        }
        assert_eq!(*batches.lock().unwrap(), vec![2, 2]);
    }

    #[tokio::test]
    async fn off_means_everyone_goes_alone() {
        let run = runner(Arc::new(Mutex::new(Vec::new())));
        let combiner = Combiner::new(0, 100);
        let alone = AtomicUsize::new(0);
        let mut turns = Vec::new();
        for i in 0..10 {
            if let Way::Alone(t) = combiner.enter(&run, || i) {
                alone.fetch_add(1, Ordering::Relaxed);
                turns.push(t);
            }
        }
        assert_eq!(alone.load(Ordering::Relaxed), 10);
    }
}
