//! Applies consumed messages for different persons at the same time and
//! each person's messages one after another, in delivery order.
//!
//! Every message is decoded on arrival and filed under its key (the person
//! it is about). A key has at most one message running; the others wait in
//! its own queue, so a person receiving a stream of records holds one
//! worker and never the ones other persons need. Keys with waiting messages
//! take free workers in turn (round robin), so a busy person gets its share
//! and no more. The number of messages held (running plus waiting) is
//! bounded; at the bound the consumer stops pulling until some finish.
//!
//! Waiting messages are kept alive with JetStream progress acks, so a long
//! queue behind a busy person is not redelivered while it waits.

use async_nats::jetstream::{self, AckKind};
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What one consumer does with its messages.
pub trait PerKey: Send + Sync + 'static {
    type Item: Send + 'static;

    /// Decodes a message and names the key it is ordered under; an error
    /// means the message can never be applied.
    fn key(&self, msg: &jetstream::Message) -> Result<(String, Self::Item), String>;

    /// Applies one message and settles it (ack, NAK or dead letter).
    fn handle(&self, item: Self::Item, msg: jetstream::Message) -> impl Future<Output = ()> + Send;

    /// Settles a message `key` refused.
    fn refuse(&self, msg: jetstream::Message, why: String) -> impl Future<Output = ()> + Send;
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Messages applied at once (each for a different key).
    pub workers: usize,
    /// Messages held at once, running and waiting.
    pub max_in_flight: usize,
    /// The consumer's ack wait: waiting messages are kept alive well
    /// within it.
    pub ack_wait: Duration,
}

struct Waiting<T, M> {
    item: T,
    msg: M,
    /// When the message arrived or was last kept alive.
    touched: Instant,
}

/// The bookkeeping of keys, queues and workers, apart from any I/O.
struct Board<T, M> {
    queues: HashMap<String, VecDeque<Waiting<T, M>>>,
    running: HashSet<String>,
    /// Keys with waiting messages and nothing running, in the order they
    /// take the next free worker.
    ready: VecDeque<String>,
    held: usize,
}

impl<T, M: Clone> Board<T, M> {
    fn new() -> Self {
        Self {
            queues: HashMap::new(),
            running: HashSet::new(),
            ready: VecDeque::new(),
            held: 0,
        }
    }

    fn arrive(&mut self, key: String, item: T, msg: M) {
        self.held += 1;
        let queue = self.queues.entry(key.clone()).or_default();
        queue.push_back(Waiting {
            item,
            msg,
            touched: Instant::now(),
        });
        // A key that is neither running nor ready yet becomes ready; one
        // that is already either keeps its place.
        if queue.len() == 1 && !self.running.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The next message to start, if a worker is free and any is ready.
    fn next(&mut self, workers: usize) -> Option<(String, T, M)> {
        if self.running.len() >= workers {
            return None;
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(w) = self.queues.get_mut(&key).and_then(VecDeque::pop_front) else {
                self.queues.remove(&key);
                continue;
            };
            self.running.insert(key.clone());
            return Some((key, w.item, w.msg));
        }
        None
    }

    fn finish(&mut self, key: &str) {
        self.held = self.held.saturating_sub(1);
        self.running.remove(key);
        match self.queues.get(key) {
            // Back of the line: other persons go first.
            Some(q) if !q.is_empty() => self.ready.push_back(key.to_string()),
            _ => {
                self.queues.remove(key);
            }
        }
    }

    /// Messages that have waited `older_than` since they were last kept
    /// alive; marked as kept alive now.
    fn stale(&mut self, older_than: Duration) -> Vec<M> {
        let now = Instant::now();
        self.queues
            .values_mut()
            .flatten()
            .filter(|w| now.duration_since(w.touched) >= older_than)
            .map(|w| {
                w.touched = now;
                w.msg.clone()
            })
            .collect()
    }

    fn drain(&mut self) -> Vec<M> {
        self.ready.clear();
        self.queues
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|w| w.msg))
            .collect()
    }
}

/// Consumes `messages` until cancelled or the stream ends; waits for the
/// messages running then, and hands the waiting ones back to JetStream.
pub async fn run<W, S, E>(
    work: Arc<W>,
    mut messages: S,
    limits: Limits,
    shutdown: CancellationToken,
) where
    W: PerKey,
    S: Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let workers = limits.workers.max(1);
    let max_in_flight = limits.max_in_flight.max(workers);
    let keep_alive = (limits.ack_wait / 2).max(Duration::from_millis(100));
    let mut board: Board<W::Item, jetstream::Message> = Board::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tick = tokio::time::interval(keep_alive / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Some((key, item, msg)) = board.next(workers) {
            let work = work.clone();
            let handle = tasks.spawn(async move { work.handle(item, msg).await });
            keys.insert(handle.id(), key);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => {
                        // The message stays unsettled and JetStream
                        // redelivers it after the ack wait.
                        warn!(error = %e, "a message handler panicked");
                        e.id()
                    }
                };
                if let Some(key) = keys.remove(&id) {
                    board.finish(&key);
                }
            }
            _ = tick.tick() => {
                for msg in board.stale(keep_alive) {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "progress ack failed");
                    }
                }
            }
            next = messages.next(), if board.held < max_in_flight => match next {
                Some(Ok(msg)) => match work.key(&msg) {
                    Ok((key, item)) => board.arrive(key, item, msg),
                    Err(why) => work.refuse(msg, why).await,
                },
                Some(Err(e)) => {
                    warn!(error = %e, "consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => break,
            },
        }
    }
    // Another engine (or this one after a restart) takes what was waiting.
    for msg in board.drain() {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the board with `workers` until everything finished, finishing
    /// the oldest running message each step; returns the start order.
    fn drive(board: &mut Board<u32, ()>, workers: usize) -> Vec<(String, u32)> {
        let mut started = Vec::new();
        let mut running: VecDeque<String> = VecDeque::new();
        loop {
            while let Some((key, item, ())) = board.next(workers) {
                started.push((key.clone(), item));
                running.push_back(key);
            }
            let Some(key) = running.pop_front() else {
                return started;
            };
            board.finish(&key);
        }
    }

    #[test]
    fn one_persons_messages_run_in_order_and_one_at_a_time() {
        let mut board = Board::new();
        for i in 0..5 {
            board.arrive("busy".into(), i, ());
        }
        assert_eq!(
            board.next(4).map(|(k, i, _)| (k, i)),
            Some(("busy".into(), 0))
        );
        assert!(board.next(4).is_none(), "the second waits for the first");
        board.finish("busy");
        let order: Vec<u32> = drive(&mut board, 4).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, [1, 2, 3, 4]);
        assert_eq!(board.held, 0);
        assert!(board.queues.is_empty());
    }

    #[test]
    fn a_busy_person_takes_one_worker_and_takes_turns() {
        let mut board = Board::new();
        for i in 0..100 {
            board.arrive("busy".into(), i, ());
        }
        board.arrive("hire".into(), 0, ());
        board.arrive("move".into(), 0, ());
        // One worker: the hire and the move each wait for one busy message
        // at most, not for the busy person's hundred.
        let order = drive(&mut board, 1);
        let position = |who: &str| order.iter().position(|(k, _)| k == who);
        assert_eq!(position("hire"), Some(1));
        assert_eq!(position("move"), Some(2));
        let busy: Vec<u32> = order
            .iter()
            .filter(|(k, _)| k == "busy")
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(busy, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn messages_arriving_while_their_person_runs_wait_for_it() {
        let mut board = Board::new();
        board.arrive("a".into(), 1, ());
        let first = board.next(2);
        assert!(first.is_some());
        board.arrive("a".into(), 2, ());
        board.arrive("b".into(), 1, ());
        assert_eq!(board.next(2).map(|(k, i, _)| (k, i)), Some(("b".into(), 1)));
        assert!(
            board.next(2).is_none(),
            "a is running, b too: both workers busy"
        );
        board.finish("b");
        assert!(board.next(2).is_none(), "a's next waits for a's first");
        board.finish("a");
        assert_eq!(board.next(2).map(|(k, i, _)| (k, i)), Some(("a".into(), 2)));
        assert_eq!(board.held, 1);
    }

    #[test]
    fn waiting_messages_are_kept_alive_once_per_interval() {
        let mut board = Board::new();
        board.arrive("a".into(), 1, ());
        board.arrive("a".into(), 2, ());
        let _ = board.next(1);
        assert_eq!(board.stale(Duration::ZERO).len(), 1, "only the waiting one");
        assert!(board.stale(Duration::from_secs(60)).is_empty());
        assert_eq!(board.drain().len(), 1);
    }
}
