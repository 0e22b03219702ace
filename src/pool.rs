//! An ordered worker pool: a bounded, order-preserving parallel map.
//!
//! [`map_ordered`] takes items from an iterator on the caller's thread,
//! hands each to one of `threads` workers, and gives the results to a sink,
//! again on the caller's thread, in the order the items came in. At most
//! `in_flight` items are between the iterator and the sink at any time
//! (queued, being worked on, or finished and waiting for an earlier one), so
//! memory stays bounded however far ahead the fast items get. Every item is
//! moved, never cloned: it lives in one place at a time.
//!
//! With `threads == 1` nothing is spawned: each item is worked on and sunk
//! on the caller's thread, one after the other, which is exactly what a
//! plain loop does. With more threads the sink sees the same results in the
//! same order, so the output is byte for byte the same.
//!
//! Stopping:
//! - the sink returns [`Flow::Stop`]: no more items are taken, the workers
//!   drop what is queued without working on it, and the call returns
//!   `Ok(Flow::Stop)`;
//! - the work returns an error for item `i`: items after `i` are no longer
//!   worked on, the sink still receives every result before `i` (an earlier
//!   item may fail too: the first failure in input order wins), then the
//!   call returns that error, as the plain loop would;
//! - the work panics on item `i`: as for an error, then the panic resumes on
//!   the caller's thread once the workers have stopped;
//! - the sink returns an error: as for [`Flow::Stop`], and the error is
//!   returned.
//!
//! Items travel in batches: the caller's thread sends the workers up to
//! [`BATCH_ITEMS`] items at a time (fewer when `in_flight` is small, so
//! every worker still gets some; fewer when their weight reaches the
//! batch's), and a worker sends a batch's results back at once. A hand-off
//! wakes a sleeping thread, which costs about what formatting a short
//! session does; a batch pays it once for many. A partial batch is sent
//! before the caller waits for a result, so nothing waits on an item
//! that was never sent.
//!
//! Each worker has its own state, made by `init` on the worker's own thread
//! (so it need not be `Send`: caches holding `Rc`s are fine), and passed to
//! every call of `work` on that thread.
//!
//! How the export is meant to use it (`--threads N`, `-j N`, default the
//! number of cores): the caller's thread keeps the state.db reader (its own
//! connection and the run's watermark) and yields one session at a time with
//! everything the formatter needs; `init` builds a worker's formatter state
//! (system-prompt cache, tokenizer and its caches, redactor); `work` rebuilds,
//! formats, redacts and counts one session into its finished output lines
//! (and the figures the summary needs); the sink writes those lines to the
//! output, advances the state and coverage, and returns [`Flow::Stop`] when
//! the reader of a pipe has gone (`export | head`). An `in_flight` of two
//! batches per worker keeps both cores busy while a long session is worked
//! on, and the weight bound (message bytes) keeps long sessions from
//! filling memory.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;

/// What the sink wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The result of one item, as a worker hands it back.
enum Done<U, E> {
    Ok(U),
    Err(E),
    Panic(Box<dyn std::any::Any + Send>),
    /// Not worked on: the pool was stopping.
    Skipped,
}

/// The most items sent to a worker at once.
pub const BATCH_ITEMS: usize = 32;

/// The weight at which a batch is sent whatever its length (a few long
/// sessions go alone, so one worker does not hold them all).
pub const BATCH_WEIGHT: usize = 512 << 10;

/// What the workers read to know whether to go on.
struct Shared {
    stop: AtomicBool,
    /// The lowest index that failed (error or panic), `usize::MAX` if none.
    failed_at: AtomicUsize,
}

impl Shared {
    fn skip(&self, index: usize) -> bool {
        self.stop.load(Ordering::Relaxed) || index > self.failed_at.load(Ordering::Relaxed)
    }
}

/// Maps `work` over `items` on `threads` workers (1: inline, on the
/// caller's thread) with at most `in_flight` items taken and not yet sunk,
/// and gives the results to `sink` in input order. See the module header.
pub fn map_ordered<I, T, U, E, S, Init, W, K>(
    threads: usize,
    in_flight: usize,
    items: I,
    init: Init,
    work: W,
    mut sink: K,
) -> Result<Flow, E>
where
    I: IntoIterator<Item = T>,
    T: Send,
    U: Send,
    E: Send,
    Init: Fn() -> S + Sync,
    W: Fn(&mut S, T) -> Result<U, E> + Sync,
    K: FnMut(U) -> Result<Flow, E>,
{
    with_pool(threads, in_flight, usize::MAX, init, work, |pool| {
        for item in items {
            if pool.push(item, 0, &mut sink)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        pool.finish(&mut sink)
    })
}

/// Runs `body` with an [`Ordered`] pool of `threads` workers (1: none, the
/// work runs inline in [`Ordered::push`]) that the caller pushes items into
/// from its own loop (a reader driving callbacks, say) and whose results
/// reach the sink the caller passes, in push order. At most `in_flight`
/// items, and items of at most `max_weight` weight (or one item, whatever
/// it weighs), are between the caller and the sink. When `body` returns,
/// the workers drop what is still queued and stop.
pub fn with_pool<T, U, E, S, Init, W, R>(
    threads: usize,
    in_flight: usize,
    max_weight: usize,
    init: Init,
    work: W,
    body: impl FnOnce(&mut Ordered<'_, T, U, E>) -> R,
) -> R
where
    T: Send,
    U: Send,
    E: Send,
    Init: Fn() -> S + Sync,
    W: Fn(&mut S, T) -> Result<U, E> + Sync,
{
    if threads <= 1 {
        let mut state = None;
        let mut inline = |item| work(state.get_or_insert_with(&init), item);
        return body(&mut Ordered::Inline(&mut inline));
    }
    let shared = Shared {
        stop: AtomicBool::new(false),
        failed_at: AtomicUsize::new(usize::MAX),
    };
    let (to_workers, queue) = mpsc::channel::<Vec<(usize, T)>>();
    let queue = Mutex::new(queue);
    let (to_caller, results) = mpsc::channel::<Vec<(usize, Done<U, E>)>>();
    let in_flight = in_flight.max(1);
    thread::scope(|scope| {
        for _ in 0..threads {
            let to_caller = to_caller.clone();
            let (queue, shared, init, work) = (&queue, &shared, &init, &work);
            scope.spawn(move || worker(queue, to_caller, shared, init, work));
        }
        drop(to_caller);
        let mut pool = Ordered::Pool(Box::new(Feed {
            to_workers,
            results,
            shared: &shared,
            in_flight,
            max_weight,
            batch: (in_flight / (2 * threads)).clamp(1, BATCH_ITEMS),
            pending: Vec::new(),
            pending_weight: 0,
            weights: VecDeque::new(),
            weight_out: 0,
            taken: 0,
            sunk: 0,
            waiting: VecDeque::new(),
        }));
        let out = body(&mut pool);
        // Stop the workers: what is still queued is dropped unworked.
        shared.stop.store(true, Ordering::Relaxed);
        drop(pool);
        out
    })
}

/// The caller's handle on a pool (see [`with_pool`]).
pub enum Ordered<'p, T, U, E> {
    /// One thread: each item is worked on where it is pushed.
    Inline(&'p mut dyn FnMut(T) -> Result<U, E>),
    Pool(Box<Feed<'p, T, U, E>>),
}

/// The caller's side of a pool with workers.
pub struct Feed<'p, T, U, E> {
    to_workers: mpsc::Sender<Vec<(usize, T)>>,
    results: mpsc::Receiver<Vec<(usize, Done<U, E>)>>,
    shared: &'p Shared,
    in_flight: usize,
    max_weight: usize,
    /// Items a batch holds at most.
    batch: usize,
    /// Items taken and not yet sent, with their weight.
    pending: Vec<(usize, T)>,
    pending_weight: usize,
    /// The weight of each item taken and not sunk (slot k: item `sunk + k`),
    /// and their sum.
    weights: VecDeque<usize>,
    weight_out: usize,
    /// Items handed to the workers.
    taken: usize,
    /// Results given to the sink.
    sunk: usize,
    /// Results that arrived early: slot k is item `sunk + k`.
    waiting: VecDeque<Option<Done<U, E>>>,
}

impl<T, U, E> Ordered<'_, T, U, E> {
    /// Hands `item` (of `weight`) to the workers, then gives `sink` every
    /// result that is next in order and ready, waiting while `in_flight`
    /// items, or more than the pool's weight, are out (so with the caller's
    /// next item in hand, at most `in_flight` are between the caller and
    /// the sink). An error (of the work, in input order, or of the sink) is
    /// returned once every earlier result is sunk; after an error or
    /// [`Flow::Stop`] the caller pushes no more.
    pub fn push(
        &mut self,
        item: T,
        weight: usize,
        sink: &mut dyn FnMut(U) -> Result<Flow, E>,
    ) -> Result<Flow, E> {
        match self {
            Ordered::Inline(work) => sink(work(item)?),
            Ordered::Pool(feed) => {
                if feed.shared.skip(feed.taken) {
                    // An earlier item failed: reach it instead.
                    drop(item);
                    return feed.drain(sink, 0);
                }
                feed.pending.push((feed.taken, item));
                feed.pending_weight = feed.pending_weight.saturating_add(weight);
                feed.weights.push_back(weight);
                feed.weight_out = feed.weight_out.saturating_add(weight);
                feed.taken += 1;
                if feed.pending.len() >= feed.batch || feed.pending_weight >= BATCH_WEIGHT {
                    feed.send();
                }
                feed.drain(sink, feed.in_flight - 1)
            }
        }
    }

    /// Gives `sink` the results of every item pushed, in order.
    pub fn finish(&mut self, sink: &mut dyn FnMut(U) -> Result<Flow, E>) -> Result<Flow, E> {
        match self {
            Ordered::Inline(_) => Ok(Flow::Continue),
            Ordered::Pool(feed) => feed.drain(sink, 0),
        }
    }
}

impl<T, U, E> Feed<'_, T, U, E> {
    /// Sends the items taken and not yet sent, if any.
    fn send(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_weight = 0;
        if self.to_workers.send(batch).is_err() {
            unreachable!("the workers outlive the caller's loop");
        }
    }

    /// Whether more than `out` items, or more than the pool's weight (with
    /// more than one item), are out.
    fn too_many_out(&self, out: usize) -> bool {
        let items = self.taken - self.sunk;
        items > out || (items > 1 && self.weight_out > self.max_weight)
    }

    /// Sinks results in order until at most `out` items are out, within
    /// the weight (and every result already there that is next in order).
    fn drain(&mut self, sink: &mut dyn FnMut(U) -> Result<Flow, E>, out: usize) -> Result<Flow, E> {
        loop {
            while let Some(Some(done)) = self.waiting.front_mut().map(Option::take) {
                self.waiting.pop_front();
                self.sunk += 1;
                let weight = self.weights.pop_front().unwrap_or(0);
                self.weight_out -= weight.min(self.weight_out);
                match done {
                    Done::Ok(u) => {
                        if sink(u)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                    Done::Err(e) => return Err(e),
                    Done::Panic(p) => panic::resume_unwind(p),
                    Done::Skipped => {
                        unreachable!("an item before the first failure is never skipped")
                    }
                }
            }
            let next = if self.too_many_out(out) {
                // Whatever is waited for must have been sent.
                self.send();
                self.results.recv().ok()
            } else {
                self.results.try_recv().ok()
            };
            let Some(batch) = next else {
                return Ok(Flow::Continue);
            };
            for (index, done) in batch {
                let slot = index - self.sunk;
                if self.waiting.len() <= slot {
                    self.waiting.resize_with(slot + 1, || None);
                }
                self.waiting[slot] = Some(done);
            }
        }
    }
}

fn worker<T, U, E, S>(
    queue: &Mutex<mpsc::Receiver<Vec<(usize, T)>>>,
    to_caller: mpsc::Sender<Vec<(usize, Done<U, E>)>>,
    shared: &Shared,
    init: &(impl Fn() -> S + Sync),
    work: &(impl Fn(&mut S, T) -> Result<U, E> + Sync),
) {
    // Workers wake at every batch handed over; they should not take a core
    // from the thread feeding them (see `crate::sched`).
    let _batch = crate::sched::Batch::enter();
    let mut state = None;
    loop {
        // The lock is held only while taking one batch.
        let next = queue.lock().map(|q| q.recv());
        let Ok(Ok(batch)) = next else { return };
        let mut results = Vec::with_capacity(batch.len());
        for (index, item) in batch {
            let done = if shared.skip(index) {
                Done::Skipped
            } else {
                let state = state.get_or_insert_with(init);
                match panic::catch_unwind(AssertUnwindSafe(|| work(state, item))) {
                    Ok(Ok(u)) => Done::Ok(u),
                    Ok(Err(e)) => Done::Err(e),
                    Err(payload) => Done::Panic(payload),
                }
            };
            if matches!(done, Done::Err(_) | Done::Panic(_)) {
                shared.failed_at.fetch_min(index, Ordering::Relaxed);
            }
            results.push((index, done));
        }
        if to_caller.send(results).is_err() {
            return;
        }
    }
}

/// The number of worker threads without `--threads`: the cores this
/// process may use.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    /// How many items are being worked on right now.
    #[derive(Debug, Default, Clone)]
    pub struct Busy(Arc<AtomicUsize>);

    impl Busy {
        /// Marks one item as being worked on until the guard drops; returns the
        /// guard and the count including this item.
        pub fn enter(&self) -> (BusyGuard, usize) {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            (BusyGuard(self.0.clone()), n)
        }
    }

    pub struct BusyGuard(Arc<AtomicUsize>);

    impl Drop for BusyGuard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Deterministic pseudo-random work: a splitmix64 walk whose length
    /// depends on the item, with yields, so items finish out of order.
    fn churn(i: u64) -> u64 {
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let rounds = (z >> 7) % 20_000;
        for r in 0..rounds {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^= z >> 27;
            if r % 4096 == 0 {
                thread::yield_now();
            }
        }
        z ^ i
    }

    fn run(threads: usize, cap: usize, n: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let flow = map_ordered(
            threads,
            cap,
            0..n,
            || (),
            |_, i| Ok::<_, String>((i, churn(i))),
            |r| {
                out.push(r);
                Ok(Flow::Continue)
            },
        )
        .unwrap();
        assert_eq!(flow, Flow::Continue);
        out
    }

    #[test]
    fn results_come_in_input_order_whatever_the_threads() {
        let inline = run(1, 1, 500);
        assert_eq!(inline.len(), 500);
        assert!(inline.iter().enumerate().all(|(k, &(i, _))| k as u64 == i));
        // The larger caps send batches of several items (up to 32).
        for (threads, cap) in [(2, 2), (2, 7), (3, 4), (4, 16), (8, 3), (2, 256), (3, 100)] {
            assert_eq!(
                run(threads, cap, 500),
                inline,
                "threads {threads}, cap {cap}"
            );
        }
    }

    #[test]
    fn one_thread_runs_inline_on_the_callers_thread() {
        let me = thread::current().id();
        let mut seen = Vec::new();
        map_ordered(
            1,
            8,
            0..5,
            || thread::current().id(),
            |id, i| Ok::<_, ()>((*id, thread::current().id(), i)),
            |r| {
                seen.push(r);
                Ok(Flow::Continue)
            },
        )
        .unwrap();
        assert_eq!(seen.len(), 5);
        assert!(seen.iter().all(|&(a, b, _)| a == me && b == me));
    }

    #[test]
    fn workers_run_off_the_callers_thread() {
        let me = thread::current().id();
        let mut off = 0;
        map_ordered(
            2,
            4,
            0..20,
            || (),
            |_, _| Ok::<_, ()>(thread::current().id()),
            |id| {
                off += usize::from(id != me);
                Ok(Flow::Continue)
            },
        )
        .unwrap();
        assert_eq!(off, 20);
    }

    #[test]
    fn no_more_than_in_flight_items_between_iterator_and_sink() {
        for (threads, cap) in [(1, 1), (2, 1), (2, 3), (4, 5), (3, 12)] {
            let out = Cell::new(0usize);
            let peak = Cell::new(0usize);
            let busy = Busy::default();
            let busy_peak = AtomicUsize::new(0);
            let items = (0..300u64).inspect(|_| {
                out.set(out.get() + 1);
                peak.set(peak.get().max(out.get()));
            });
            map_ordered(
                threads,
                cap,
                items,
                || (),
                |_, i| {
                    let (_guard, n) = busy.enter();
                    busy_peak.fetch_max(n, Ordering::SeqCst);
                    Ok::<_, ()>(churn(i))
                },
                |_| {
                    out.set(out.get() - 1);
                    Ok(Flow::Continue)
                },
            )
            .unwrap();
            assert_eq!(out.get(), 0);
            assert!(peak.get() <= cap, "peak {} > cap {cap}", peak.get());
            assert!(busy_peak.load(Ordering::SeqCst) <= threads.min(cap));
        }
    }

    #[test]
    fn no_more_than_the_weight_between_the_caller_and_the_sink() {
        // Items of weight 100 (every seventh of 2,500) under a bound of
        // 1,000: at most 10 out after each push returns (one heavy item may
        // be out alone), in order, with batches of up to 32 items.
        let weight = |i: u64| if i.is_multiple_of(7) { 2_500 } else { 100 };
        let out = Cell::new(0usize);
        let held = Cell::new(0usize);
        let mut got = Vec::new();
        with_pool(
            2,
            256,
            1_000,
            || (),
            |_, i: u64| Ok::<_, ()>((i, churn(i))),
            |pool| {
                for i in 0..2_000u64 {
                    out.set(out.get() + 1);
                    held.set(held.get() + weight(i) as usize);
                    let mut sink = |(k, v): (u64, u64)| {
                        out.set(out.get() - 1);
                        held.set(held.get() - weight(k) as usize);
                        got.push((k, v));
                        Ok(Flow::Continue)
                    };
                    pool.push(i, weight(i) as usize, &mut sink).unwrap();
                    assert!(
                        out.get() <= 1 || held.get() <= 1_000,
                        "{} items of {} weight out",
                        out.get(),
                        held.get()
                    );
                }
                let mut sink = |r| {
                    got.push(r);
                    Ok(Flow::Continue)
                };
                pool.finish(&mut sink).unwrap();
            },
        );
        assert_eq!(got, (0..2_000).map(|i| (i, churn(i))).collect::<Vec<_>>());
    }

    #[test]
    fn the_sink_stopping_stops_the_pool() {
        let pulled = Cell::new(0u64);
        let worked = AtomicUsize::new(0);
        let mut got = Vec::new();
        let items = (0..1_000_000u64).inspect(|_| pulled.set(pulled.get() + 1));
        let flow = map_ordered(
            2,
            6,
            items,
            || (),
            |_, i| {
                worked.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(churn(i))
            },
            |r| {
                got.push(r);
                Ok(if got.len() == 10 {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            },
        )
        .unwrap();
        assert_eq!(flow, Flow::Stop);
        assert_eq!(got, (0..10).map(churn).collect::<Vec<_>>());
        assert!(pulled.get() <= 10 + 6, "pulled {}", pulled.get());
        assert!(worked.load(Ordering::SeqCst) <= 16);
    }

    fn failing(threads: usize, bad: &[u64]) -> (Result<Flow, u64>, Vec<u64>, u64) {
        let pulled = Cell::new(0u64);
        let items = (0..10_000u64).inspect(|_| pulled.set(pulled.get() + 1));
        let mut got = Vec::new();
        let r = map_ordered(
            threads,
            8,
            items,
            || (),
            |_, i| {
                // The failing items are slower than the others.
                for k in 0..if bad.contains(&i) { 4 } else { 1 } {
                    std::hint::black_box(churn(i * 7 + k));
                }
                if bad.contains(&i) { Err(i) } else { Ok(i) }
            },
            |i| {
                got.push(i);
                Ok(Flow::Continue)
            },
        );
        (r, got, pulled.get())
    }

    #[test]
    fn the_first_error_in_input_order_stops_the_pool() {
        for threads in [1, 2, 4] {
            let (r, got, pulled) = failing(threads, &[37, 41, 90]);
            assert_eq!(r, Err(37), "threads {threads}");
            assert_eq!(got, (0..37).collect::<Vec<_>>());
            assert!(pulled <= 38 + 8, "threads {threads}: pulled {pulled}");
        }
    }

    #[test]
    fn a_sink_error_stops_the_pool() {
        let r = map_ordered(
            3,
            4,
            0..1000u64,
            || (),
            |_, i| Ok(i),
            |i| {
                if i == 5 {
                    Err("full")
                } else {
                    Ok(Flow::Continue)
                }
            },
        );
        assert_eq!(r, Err("full"));
    }

    #[test]
    fn a_panicking_worker_stops_the_pool_and_the_panic_reaches_the_caller() {
        let mut got = Vec::new();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            map_ordered(
                2,
                5,
                0..10_000u64,
                || (),
                |_, i| {
                    assert!(i != 23, "item {i} is bad");
                    Ok::<_, ()>(churn(i))
                },
                |r| {
                    got.push(r);
                    Ok(Flow::Continue)
                },
            )
        }));
        let payload = caught.expect_err("the panic is resumed");
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("item 23 is bad"), "{text}");
        assert_eq!(got, (0..23).map(churn).collect::<Vec<_>>());
    }

    #[test]
    fn each_worker_keeps_its_own_state() {
        // A per-worker counter: each worker's counts run 1, 2, 3... and add
        // up to the number of items; one state per worker that did work.
        let made = AtomicUsize::new(0);
        let mut seen: Vec<(thread::ThreadId, u64)> = Vec::new();
        map_ordered(
            3,
            6,
            0..200u64,
            || {
                made.fetch_add(1, Ordering::SeqCst);
                std::rc::Rc::new(Cell::new(0u64))
            },
            |count, i| {
                count.set(count.get() + 1);
                std::hint::black_box(churn(i));
                Ok::<_, ()>((thread::current().id(), count.get()))
            },
            |r| {
                seen.push(r);
                Ok(Flow::Continue)
            },
        )
        .unwrap();
        assert_eq!(seen.len(), 200);
        let mut ids: Vec<_> = seen.iter().map(|&(id, _)| id).collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(made.load(Ordering::SeqCst), ids.len());
        for id in ids {
            let counts: Vec<u64> = seen.iter().filter(|s| s.0 == id).map(|s| s.1).collect();
            assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>());
        }
    }
}
