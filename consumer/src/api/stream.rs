//! The update stream's memory: the resume window, the live broadcast, and erasure.
//!
//! Every applied update gets a sequence number (the SSE event id) and goes, under one
//! lock and in sequence order, into the resume window ([`RESUME_WINDOW`] most recent
//! updates, for `Last-Event-ID`) and onto a broadcast channel of [`STREAM_BUFFER`] slots
//! that live clients read. A client that resumes replays the window one update at a time
//! (never a copy of it) up to the sequence number at which it subscribed, then reads live.
//!
//! Erasure ([`Updates::forget`]) must leave nothing of the user to send once the DELETE
//! returns, wherever an update of theirs may still sit:
//! - the resume window: their updates are removed from it;
//! - the broadcast slots (which cannot be edited): the user is remembered with the last
//!   sequence number published before the erasure, and every client checks each live
//!   update against that memory right before sending it;
//! - a batch committed just before the erasure but published just after it: publishing
//!   an update of a remembered user first asks the store whether the user has a profile
//!   again (a batch committed after the erasure wrote them back, so its updates describe
//!   what the store holds); if not, the update is withheld.
//!
//! The memory of an erasure is dropped once it can no longer matter: after
//! [`ERASURE_MEMORY`] and after twice [`STREAM_BUFFER`] later updates (so no broadcast
//! slot can still hold one of the user's earlier updates).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::Stream;
use onramp_schemas::{Hints, ProfileUpdate};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::store::Store;

/// Updates buffered per live client before it is dropped.
pub const STREAM_BUFFER: usize = 4_096;
/// Recent updates kept for `Last-Event-ID` resumption.
pub const RESUME_WINDOW: usize = 10_000;
/// Least time an erased user is remembered by the update stream (see the module docs).
pub const ERASURE_MEMORY: Duration = Duration::from_secs(60);

/// One applied update on the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Streamed {
    /// Sequence number in this process (the SSE event id).
    pub seq: u64,
    /// Partition.
    pub partition: u32,
    /// The person the update's id belongs to when it was published (its user, for an
    /// anonymous id linked to one; see `store::identity`).
    pub person_id: String,
    /// The update.
    pub update: ProfileUpdate,
    /// The user's hints once the update's batch committed.
    pub hints: Hints,
}

/// What a client's stream yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// An update to send.
    Update(Arc<Streamed>),
    /// The client fell behind and is disconnected; the reason to tell it.
    Dropped(String),
}

struct Window {
    recent: VecDeque<Arc<Streamed>>,
    next_seq: u64,
    /// Highest sequence number pushed out of the window by newer updates (0: none).
    evicted_through: u64,
}

#[derive(Debug, Clone, Copy)]
struct Erasure {
    /// Last sequence number published before the erasure.
    last_seq: u64,
    at: Instant,
}

/// The stream's shared state (one per process).
pub struct Updates {
    window: Mutex<Window>,
    tx: broadcast::Sender<Arc<Streamed>>,
    erased: RwLock<HashMap<String, Erasure>>,
    /// Fast path: false while `erased` is empty.
    any_erased: AtomicBool,
}

impl Default for Updates {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(STREAM_BUFFER);
        Updates {
            window: Mutex::new(Window {
                recent: VecDeque::new(),
                next_seq: 1,
                evicted_through: 0,
            }),
            tx,
            erased: RwLock::new(HashMap::new()),
            any_erased: AtomicBool::new(false),
        }
    }
}

impl Updates {
    /// Publishes one batch's applied updates with their hints. `store` is asked about
    /// recently erased users only (see the module docs); returns how many were withheld.
    pub fn publish<'a>(
        &self,
        partition: u32,
        updates: impl IntoIterator<Item = (&'a ProfileUpdate, Hints)>,
        store: Option<&Store>,
    ) -> u64 {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let mut withheld = 0;
        for (update, hints) in updates {
            if self.remembered(&update.user_id).is_some() && !has_profile(store, &update.user_id) {
                withheld += 1;
                continue;
            }
            let person_id = store
                .and_then(|s| s.person_id(&update.user_id).ok())
                .unwrap_or_else(|| update.user_id.clone());
            let item = Arc::new(Streamed {
                seq: window.next_seq,
                partition,
                person_id,
                update: update.clone(),
                hints,
            });
            window.next_seq += 1;
            if window.recent.len() >= RESUME_WINDOW {
                if let Some(old) = window.recent.pop_front() {
                    window.evicted_through = old.seq;
                }
            }
            window.recent.push_back(item.clone());
            // Sent under the window's lock: a subscriber that notes `next_seq` and
            // subscribes under the same lock sees every update exactly once.
            let _ = self.tx.send(item);
        }
        if self.any_erased.load(Ordering::SeqCst) {
            self.prune(window.next_seq, Instant::now());
        }
        withheld
    }

    /// Forgets `user`: removes their updates from the resume window and makes every
    /// client skip those still in the broadcast slots. Returns how many were removed from
    /// the window.
    pub fn forget(&self, user: &str) -> usize {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let before = window.recent.len();
        window.recent.retain(|s| s.update.user_id != user);
        // Other users' updates that named the erased id as their anonymous id keep the
        // update, without the id (as the store keeps their profiles).
        for s in window.recent.iter_mut() {
            let names_it = s.update.changes.as_ref().and_then(|c| c.anonymous_id.as_deref()) == Some(user);
            if names_it {
                if let Some(c) = Arc::make_mut(s).update.changes.as_mut() {
                    c.anonymous_id = None;
                }
            }
        }
        let erasure = Erasure {
            last_seq: window.next_seq - 1,
            at: Instant::now(),
        };
        {
            let mut erased = self.erased.write().unwrap_or_else(|e| e.into_inner());
            erased.insert(user.to_string(), erasure);
            self.any_erased.store(true, Ordering::SeqCst);
        }
        self.prune(window.next_seq, erasure.at);
        before - window.recent.len()
    }

    /// Erasures still remembered (for tests and logs).
    pub fn remembered_erasures(&self) -> usize {
        self.erased.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn remembered(&self, user: &str) -> Option<Erasure> {
        if !self.any_erased.load(Ordering::SeqCst) {
            return None;
        }
        self.erased.read().unwrap_or_else(|e| e.into_inner()).get(user).copied()
    }

    /// True unless `item` is an update of a user erased after it was published.
    fn visible(&self, item: &Streamed) -> bool {
        self.remembered(&item.update.user_id)
            .is_none_or(|e| item.seq > e.last_seq)
    }

    fn prune(&self, next_seq: u64, now: Instant) {
        let mut erased = self.erased.write().unwrap_or_else(|e| e.into_inner());
        erased.retain(|_, e| {
            now.duration_since(e.at) < ERASURE_MEMORY || next_seq <= e.last_seq + 1 + 2 * STREAM_BUFFER as u64
        });
        self.any_erased.store(!erased.is_empty(), Ordering::SeqCst);
    }

    /// A client's stream: with `last_id`, the window's updates after it first, then live
    /// updates. Updates of users erased meanwhile are never yielded. A client that falls
    /// more than [`STREAM_BUFFER`] updates behind (or whose replay is overtaken by the
    /// window) gets [`Item::Dropped`] and its stream ends.
    pub fn subscribe(self: &Arc<Self>, last_id: Option<u64>) -> impl Stream<Item = Item> + Send + 'static {
        let (rx, live_from, evicted_through) = {
            let window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            (self.tx.subscribe(), window.next_seq, window.evicted_through)
        };
        // A resume point already out of the window replays what the window still holds.
        let cursor = last_id.map(|id| id.max(evicted_through));
        let state = Client {
            updates: self.clone(),
            cursor,
            live_from,
            rx,
            done: false,
        };
        futures_util::stream::unfold(state, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
    }

    /// What a connected client is sent: [`Updates::subscribe`] for the updates `keep`
    /// accepts, read by a task of its own into a queue of [`STREAM_BUFFER`] updates that
    /// the connection drains. A client that stops reading is found out when its queue is
    /// full, whether or not its connection can still be written to (a peer that reads
    /// nothing fills the socket buffers, and then its stream is never polled): `dropped`
    /// is called at once, and the reason is queued after what the client has not read.
    /// The task ends when the client goes away. An update of a user erased while it was
    /// queued is never handed out.
    pub fn subscribe_queued(
        self: &Arc<Self>,
        last_id: Option<u64>,
        mut keep: impl FnMut(&Streamed) -> bool + Send + 'static,
        dropped: impl FnOnce() + Send + 'static,
    ) -> impl Stream<Item = Item> + Send + 'static {
        use futures_util::StreamExt;
        // One slot more than the buffer: the last one is kept for the reason.
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER + 1);
        let items = self.subscribe(last_id);
        let mut dropped = Some(dropped);
        tokio::spawn(async move {
            let mut items = std::pin::pin!(items);
            loop {
                let item = tokio::select! {
                    item = items.next() => item,
                    () = tx.closed() => return,
                };
                let item = match item {
                    None => return,
                    Some(Item::Update(s)) if !keep(&s) => continue,
                    Some(Item::Update(_)) if tx.capacity() <= 1 => Item::Dropped(format!(
                        "client too slow: {STREAM_BUFFER} updates were not read in time; reconnect with Last-Event-ID"
                    )),
                    Some(item) => item,
                };
                let last = matches!(item, Item::Dropped(_));
                if last {
                    if let Some(dropped) = dropped.take() {
                        dropped();
                    }
                }
                // Never full: an update needs two free slots, the reason one.
                if tx.try_send(item).is_err() || last {
                    return;
                }
            }
        });
        // Checked again on the way out: the user may have been erased while queued.
        let updates = self.clone();
        tokio_stream::wrappers::ReceiverStream::new(rx).filter(move |item| {
            std::future::ready(match item {
                Item::Update(s) => updates.visible(s),
                Item::Dropped(_) => true,
            })
        })
    }

    /// The first update in the window after `cursor` and before `live_from`.
    fn replay_after(&self, cursor: u64, live_from: u64) -> Replay {
        let window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.evicted_through > cursor {
            return Replay::Overtaken;
        }
        let i = window.recent.partition_point(|s| s.seq <= cursor);
        match window.recent.get(i) {
            Some(s) if s.seq < live_from => Replay::Next(s.clone()),
            _ => Replay::Done,
        }
    }
}

enum Replay {
    Next(Arc<Streamed>),
    Done,
    Overtaken,
}

fn has_profile(store: Option<&Store>, user: &str) -> bool {
    match store.map(|s| s.profile(user)) {
        Some(Ok(p)) => p.is_some(),
        Some(Err(e)) => {
            tracing::error!("cannot check whether erased user `{user}` was written back: {e}; their update is withheld from the stream");
            false
        }
        None => false,
    }
}

struct Client {
    updates: Arc<Updates>,
    /// Replaying the window after this sequence number; `None` once live.
    cursor: Option<u64>,
    live_from: u64,
    rx: broadcast::Receiver<Arc<Streamed>>,
    done: bool,
}

impl Client {
    async fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        if let Some(cursor) = self.cursor {
            match self.updates.replay_after(cursor, self.live_from) {
                // The window never holds an erased user's updates: no visibility check.
                Replay::Next(s) => {
                    self.cursor = Some(s.seq);
                    return Some(Item::Update(s));
                }
                Replay::Done => self.cursor = None,
                Replay::Overtaken => {
                    self.done = true;
                    return Some(Item::Dropped(format!(
                        "client too slow: the updates after id {cursor} left the resume window while being replayed; reconnect with Last-Event-ID"
                    )));
                }
            }
        }
        loop {
            match self.rx.recv().await {
                Ok(s) if self.updates.visible(&s) => return Some(Item::Update(s)),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    self.done = true;
                    return Some(Item::Dropped(format!(
                        "client too slow: {n} updates were not read in time; reconnect with Last-Event-ID"
                    )));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, StoreSettings};
    use futures_util::StreamExt;
    use onramp_schemas::{Changes, Counters};

    fn update(user: &str, offset: i64) -> ProfileUpdate {
        ProfileUpdate::applied(
            user,
            offset,
            format!("e{offset}"),
            "page_view",
            1_700_000_000_000 + offset,
            Some(Changes {
                counters: Counters {
                    events: 1,
                    ..Default::default()
                },
                email: Some(format!("{user}@example.com")),
                ..Default::default()
            }),
        )
    }

    fn publish(u: &Updates, updates: &[ProfileUpdate], store: Option<&Store>) -> u64 {
        u.publish(0, updates.iter().map(|x| (x, Hints::default())), store)
    }

    /// Takes what a stream yields without waiting for more.
    async fn ready(stream: impl Stream<Item = Item>) -> Vec<Item> {
        let mut stream = std::pin::pin!(stream);
        let mut out = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
            out.push(item);
        }
        out
    }

    fn users(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Update(s) => s.update.user_id.clone(),
                Item::Dropped(r) => format!("dropped: {r}"),
            })
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// A resumed client replays the window after its id, then reads live updates, each
    /// exactly once and in order.
    #[test]
    fn resume_replays_the_window_then_goes_live() {
        runtime().block_on(async {
            let u = Arc::new(Updates::default());
            publish(&u, &[update("a", 0), update("b", 1), update("c", 2)], None);
            let stream = u.subscribe(Some(1));
            publish(&u, &[update("d", 3)], None);
            let got = ready(stream).await;
            assert_eq!(users(&got), ["b", "c", "d"]);
            let seqs: Vec<u64> = got
                .iter()
                .filter_map(|i| match i {
                    Item::Update(s) => Some(s.seq),
                    Item::Dropped(_) => None,
                })
                .collect();
            assert_eq!(seqs, [2, 3, 4]);
        });
    }

    /// After `forget`, neither a resume from id 0 nor a client subscribed before the
    /// erasure (its broadcast slots already holding the user's updates) gets any update
    /// of the erased user; others' updates still flow, and so do the user's updates
    /// published after the erasure when the store holds their profile again.
    #[test]
    fn forgotten_user_is_never_sent_again() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let settings = StoreSettings {
                partitions: 1,
                chain_params: "test".into(),
            };
            let store = Store::open(dir.path(), &settings).expect("store");
            let u = Arc::new(Updates::default());
            let early = u.subscribe(None);
            publish(
                &u,
                &[update("gone", 0), update("kept", 1), update("gone", 2)],
                Some(&store),
            );
            assert_eq!(u.forget("gone"), 2, "both updates leave the window");

            let resumed = ready(u.subscribe(Some(0))).await;
            assert_eq!(users(&resumed), ["kept"]);
            let live = ready(early).await;
            assert_eq!(users(&live), ["kept"], "the broadcast slots are filtered too");

            // A batch committed before the erasure but published after it: no profile in
            // the store, so it is withheld.
            let after = u.subscribe(None);
            assert_eq!(publish(&u, &[update("gone", 3)], Some(&store)), 1);
            // A batch that wrote the user back: the store has the profile, so it is sent.
            let back = update("gone", 4);
            store
                .commit(&Batch {
                    partition: 0,
                    last_offset: 4,
                    events_in: 1,
                    updates: vec![back.clone()],
                    rejects: Vec::new(),
                    input: None,
                })
                .expect("commit");
            assert_eq!(publish(&u, &[back], Some(&store)), 0);
            let got = ready(after).await;
            assert_eq!(users(&got), ["gone"]);
            let Item::Update(s) = &got[0] else {
                panic!("an update, got {got:?}")
            };
            assert_eq!(s.update.offset, 4);
        });
    }

    /// An erasure is remembered while it can matter and forgotten after
    /// [`ERASURE_MEMORY`] and twice [`STREAM_BUFFER`] later updates.
    #[test]
    fn erasure_memory_is_bounded() {
        let u = Updates::default();
        u.forget("gone");
        assert_eq!(u.remembered_erasures(), 1);
        let many: Vec<ProfileUpdate> = (0..2 * STREAM_BUFFER as i64 + 1).map(|i| update("x", i)).collect();
        publish(&u, &many, None);
        assert_eq!(u.remembered_erasures(), 1, "kept for ERASURE_MEMORY");
        let last_seq = 2 * STREAM_BUFFER as u64 + 1;
        u.prune(last_seq + 1, Instant::now() + ERASURE_MEMORY);
        assert_eq!(u.remembered_erasures(), 0);
        assert!(!u.any_erased.load(Ordering::SeqCst));
    }

    /// A connected client that reads nothing is dropped (and counted) as soon as its
    /// queue is full, before anything polls its stream; what it then reads is its queue:
    /// the first updates it was sent, then the reason.
    #[test]
    fn a_client_that_reads_nothing_is_dropped_at_once() {
        runtime().block_on(async {
            let u = Arc::new(Updates::default());
            let dropped = Arc::new(AtomicBool::new(false));
            let flag = dropped.clone();
            let quiet = u.subscribe_queued(
                None,
                |s| s.update.user_id != "skipped",
                move || flag.store(true, Ordering::SeqCst),
            );
            // Published in slices the queueing task keeps up with, so the broadcast
            // itself never overflows: only the client's queue does.
            for slice in 0..(STREAM_BUFFER as i64 / 512 + 2) {
                let many: Vec<ProfileUpdate> = (0..512)
                    .map(|i| update(if i % 2 == 0 { "x" } else { "skipped" }, slice * 512 + i))
                    .collect();
                publish(&u, &many, None);
                tokio::time::sleep(Duration::from_millis(5)).await;
                publish(&u, &many, None);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(dropped.load(Ordering::SeqCst), "counted before the stream is read");
            let got = ready(quiet).await;
            assert_eq!(got.len(), STREAM_BUFFER + 1, "the queue, then the reason");
            assert!(
                users(&got[..STREAM_BUFFER]).iter().all(|u| u == "x"),
                "filtered before queueing"
            );
            assert!(
                matches!(&got[STREAM_BUFFER], Item::Dropped(r) if r.contains("client too slow")),
                "{:?}",
                got.last()
            );
        });
    }

    /// A client that stops reading is dropped with a reason once its buffer overflows,
    /// and one whose replay is overtaken by the window is told so.
    #[test]
    fn slow_clients_are_dropped_with_a_reason() {
        runtime().block_on(async {
            let u = Arc::new(Updates::default());
            let slow = u.subscribe(None);
            let many: Vec<ProfileUpdate> = (0..STREAM_BUFFER as i64 + 10).map(|i| update("x", i)).collect();
            publish(&u, &many, None);
            let got = ready(slow).await;
            assert_eq!(got.len(), 1, "only the reason");
            assert!(matches!(&got[0], Item::Dropped(r) if r.contains("10 updates were not read")));

            let resumed = u.subscribe(Some(0));
            let mut resumed = std::pin::pin!(resumed);
            assert!(matches!(resumed.next().await, Some(Item::Update(s)) if s.seq == 1));
            let more: Vec<ProfileUpdate> = (0..RESUME_WINDOW as i64).map(|i| update("y", i)).collect();
            publish(&u, &more, None);
            let rest = ready(resumed).await;
            assert!(
                matches!(rest.as_slice(), [Item::Dropped(r)] if r.contains("left the resume window")),
                "{rest:?}"
            );
        });
    }
}
