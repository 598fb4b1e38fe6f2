//! Connections: accept, cap, time out, serve HTTP/1.1.
//!
//! - At most `max_connections` connections are open. When a client connects while the cap
//!   is reached, the oldest open connection that has been silent for [`SHED_GRACE`] since
//!   it opened (no request yet) is closed to make room ([`Unheard`]; counted in
//!   `onramp_api_connections_shed_total`): clients that connect and say nothing cannot keep
//!   `/healthz` or anyone else out, while a client whose request is already on its way is
//!   not cut. Until a slot frees the new connection is held (one descriptor over the cap),
//!   shedding is retried every [`SHED_RETRY`], and the listener is not polled, so further
//!   clients wait in the kernel's accept backlog (nothing spins). A keep-alive connection
//!   that went quiet after a request is not shed: the header timeout closes it.
//! - A connection must send a complete request head within `header_timeout` of opening,
//!   and again within `header_timeout` after each response (so the same limit is the
//!   idle keep-alive timeout); otherwise it is closed. A response (or an update stream)
//!   whose client reads nothing for [`WRITE_STALL_TIMEOUT`] is cut. Update streams that
//!   are read stay open as long as the client wants.
//! - Accept errors such as running out of descriptors (EMFILE) back off exponentially
//!   from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`] and are logged at most once per
//!   [`ACCEPT_ERROR_LOG_EVERY`], with how many occurred.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower_service::Service;

use super::access::Connection;
use super::Hub;

/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default `--header-timeout` (as the flag is written).
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// A response write that makes no progress for this long closes the connection.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause after an accept error.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after repeated accept errors.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A connection silent for this long since it opened may be shed at the cap.
pub const SHED_GRACE: Duration = Duration::from_millis(500);
/// At the cap, how often shedding is tried again while no slot is free.
pub const SHED_RETRY: Duration = Duration::from_millis(100);
/// Accept errors are logged at most this often.
pub const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a request head, from connecting or from the previous response.
    pub header_timeout: Duration,
}

/// Accepts and serves connections until the process exits.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, hub: Arc<Hub>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let unheard = Arc::new(Unheard::default());
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => {
                errors.succeeded();
                accepted
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                hub.metrics.accept_error();
                let (pause, report) = errors.failed(Instant::now());
                if let Some(n) = report {
                    tracing::warn!(
                        "accepting API connections failed {n} time(s) since the last report (latest: {e}); \
                         pausing {} ms between attempts. If this is `Too many open files`, lower \
                         --max-connections or raise the descriptor limit (ulimit -n)",
                        pause.as_millis()
                    );
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => loop {
                if unheard.shed_oldest(SHED_GRACE) {
                    hub.metrics.connection_shed();
                    tracing::debug!("connection cap reached: closed the oldest connection that sent no request");
                }
                // Waiting here (not in accept) keeps further clients in the kernel backlog.
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => break slot,
                        Err(_) => return, // the semaphore is never closed
                    },
                    _ = tokio::time::sleep(SHED_RETRY) => {}
                }
            },
        };
        let conn = Connection { local, remote };
        let router = router.clone();
        let hub = hub.clone();
        let (id, shed) = unheard.register();
        let unheard = unheard.clone();
        tokio::spawn(async move {
            let _slot = slot;
            hub.metrics.api_connection(true);
            let _open = OpenConnection(hub);
            let heard = unheard.clone();
            tokio::select! {
                _ = serve_connection(stream, conn, router, limits.header_timeout, move || heard.heard(id)) => {}
                // The sender is dropped when the connection is heard: then never shed.
                Ok(()) = shed => {}
            }
            // However it ended (closed without a request, too): no longer a candidate.
            unheard.heard(id);
        });
    }
}

/// The open connections that have not sent a request yet, oldest first: the ones closed
/// when the connection cap is reached and another client connects.
#[derive(Default)]
struct Unheard {
    inner: std::sync::Mutex<UnheardInner>,
}

#[derive(Default)]
struct UnheardInner {
    next: u64,
    /// By id (ids grow, so the first is the oldest): when it opened, and its shed signal.
    waiting: std::collections::BTreeMap<u64, (Instant, tokio::sync::oneshot::Sender<()>)>,
}

impl Unheard {
    /// A new connection: its id, and what fires when it is shed.
    fn register(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, (Instant::now(), tx));
        (id, rx)
    }

    /// The connection sent a request: it is no longer a candidate.
    fn heard(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiting.remove(&id);
    }

    /// Closes the oldest connection still waiting for its first request, if it has waited
    /// at least `grace`; false if none has.
    fn shed_oldest(&self, grace: Duration) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = inner.waiting.first_entry() {
            if entry.get().0.elapsed() < grace {
                return false; // the oldest is the longest silent: none other qualifies
            }
            let (_, tx) = entry.remove();
            // A closed receiver is a connection that already ended: try the next.
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Connections waiting for their first request (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).waiting.len()
    }
}

/// Counts a connection out when it ends, however it ends.
struct OpenConnection(Arc<Hub>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.api_connection(false);
    }
}

async fn serve_connection(
    stream: TcpStream,
    conn: Connection,
    router: Router,
    header_timeout: Duration,
    heard: impl Fn() + Send + Sync + 'static,
) {
    let io = TokioIo::new(StallGuard::new(stream, WRITE_STALL_TIMEOUT));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        heard();
        req.extensions_mut().insert(conn);
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let result = http.serve_connection(io, service).await;
    if let Err(e) = result {
        tracing::debug!(remote = %conn.remote, "API connection closed: {e}");
    }
}

/// Errors that concern one connection only (the client went away before it was
/// accepted): accept the next one at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Back-off and log rate of accept errors.
#[derive(Debug, Default)]
struct AcceptErrors {
    backoff: Option<Duration>,
    unreported: u64,
    last_report: Option<Instant>,
}

impl AcceptErrors {
    /// An accept failed at `now`: how long to pause, and the count to log if a report is due.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = match self.backoff {
            None => ACCEPT_BACKOFF_MIN,
            Some(b) => (b * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.backoff = Some(pause);
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_ERROR_LOG_EVERY);
        if !due {
            return (pause, None);
        }
        self.last_report = Some(now);
        (pause, Some(std::mem::take(&mut self.unreported)))
    }

    /// An accept succeeded: the next error starts the back-off afresh (its report still
    /// waits for the interval).
    fn succeeded(&mut self) {
        self.backoff = None;
    }
}

/// A stream whose writes fail with `TimedOut` once one has been pending for `limit`.
struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write returned `Pending`: arms the deadline (or checks it).
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} s", limit.as_secs()),
        ))
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stall(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP stream has nothing of its own to flush: only writes measure progress.
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves shedding takes the oldest connection still silent past the grace, skips ones
    /// that spoke or ended, and that an ended connection leaves nothing behind.
    #[test]
    fn the_oldest_silent_connection_is_shed_after_its_grace() {
        let unheard = Unheard::default();
        let (a, mut shed_a) = unheard.register();
        let (b, mut shed_b) = unheard.register();
        let (_c, mut shed_c) = unheard.register();
        assert!(
            !unheard.shed_oldest(Duration::from_secs(3600)),
            "none is past the grace"
        );
        unheard.heard(a);
        assert!(unheard.shed_oldest(Duration::ZERO));
        assert!(shed_b.try_recv().is_ok(), "b, the oldest still silent, is shed");
        assert!(shed_a.try_recv().is_err() && shed_c.try_recv().is_err());
        drop(shed_c); // c's connection ended without a word
        assert!(
            !unheard.shed_oldest(Duration::ZERO),
            "an ended connection is not counted as shed"
        );
        unheard.heard(b);
        assert_eq!(unheard.len(), 0, "nothing is kept for ended connections");
    }

    /// A burst of accept errors is logged once per interval with its count, and the
    /// pause doubles from the minimum to the maximum and starts afresh after a success.
    #[test]
    fn accept_errors_back_off_and_are_logged_once_per_interval() {
        let mut e = AcceptErrors::default();
        let t0 = Instant::now();
        let (pause, report) = e.failed(t0);
        assert_eq!((pause, report), (ACCEPT_BACKOFF_MIN, Some(1)));
        let mut pauses = vec![pause];
        for i in 1..1000 {
            let (pause, report) = e.failed(t0 + Duration::from_millis(i));
            assert_eq!(report, None, "no second report within the interval");
            pauses.push(pause);
        }
        assert_eq!(pauses[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().expect("pauses"), ACCEPT_BACKOFF_MAX);
        e.succeeded();
        let (pause, report) = e.failed(t0 + ACCEPT_ERROR_LOG_EVERY);
        assert_eq!(pause, ACCEPT_BACKOFF_MIN);
        assert_eq!(report, Some(1000), "the report counts every error since the last one");
    }

    /// A write the peer never reads fails with `TimedOut` after the stall limit instead
    /// of holding the connection forever.
    #[test]
    fn a_write_nobody_reads_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let _peer = TcpStream::connect(addr).await.expect("connect"); // never reads
            let (server, _) = listener.accept().await.expect("accept");
            let mut guarded = StallGuard::new(server, Duration::from_millis(300));
            let chunk = vec![0u8; 1 << 16];
            let started = Instant::now();
            let err = loop {
                match std::future::poll_fn(|cx| Pin::new(&mut guarded).poll_write(cx, &chunk)).await {
                    Ok(_) => assert!(started.elapsed() < Duration::from_secs(20), "socket buffers never fill"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }
}
