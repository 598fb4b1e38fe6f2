//! The process's one stop request (ctrl-c, SIGTERM or a caller), passed explicitly to
//! everything that runs until told to stop.
//!
//! Blocking code waits on it ([`Shutdown::wait`]) or checks it between steps
//! ([`Shutdown::is_requested`]); async code awaits it ([`Shutdown::requested`]). Nothing
//! polls a flag on a timer: a request wakes every waiter at once.

use std::sync::{Arc, Condvar, Mutex};

/// A stop request shared by clones: once requested, it stays requested.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    requested: Mutex<bool>,
    changed: Condvar,
    async_waiters: tokio::sync::watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(Inner {
            requested: Mutex::new(false),
            changed: Condvar::new(),
            async_waiters: tokio::sync::watch::Sender::new(false),
        }))
    }
}

impl Shutdown {
    /// A request that ctrl-c and SIGTERM make. If the handler cannot be installed (one
    /// already is), that is logged and only [`Shutdown::request`] stops the process's work.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::default();
        let on_signal = shutdown.clone();
        if let Err(e) = ctrlc::set_handler(move || on_signal.request()) {
            tracing::warn!("cannot install the ctrl-c handler: {e}");
        }
        shutdown
    }

    /// Asks everything waiting on this to stop.
    pub fn request(&self) {
        *self.0.requested.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.changed.notify_all();
        self.0.async_waiters.send_replace(true);
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.requested.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until a stop is requested.
    pub fn wait(&self) {
        let requested = self.0.requested.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.0.changed.wait_while(requested, |r| !*r));
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn requested(&self) {
        let mut rx = self.0.async_waiters.subscribe();
        // The sender lives as long as `self`, so this only returns once the value is true.
        let _ = rx.wait_for(|r| *r).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Proves a request wakes a blocked waiter and an async waiter at once, and that a
    /// later waiter sees it without waiting.
    #[test]
    fn a_request_wakes_every_waiter() {
        let shutdown = Shutdown::default();
        assert!(!shutdown.is_requested());
        let blocked = {
            let s = shutdown.clone();
            std::thread::spawn(move || {
                s.wait();
                s.is_requested()
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let waiter = {
            let s = shutdown.clone();
            rt.spawn(async move { s.requested().await })
        };
        std::thread::sleep(Duration::from_millis(20));
        let asked = std::time::Instant::now();
        shutdown.request();
        assert!(blocked.join().unwrap());
        rt.block_on(waiter).unwrap();
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert!(shutdown.is_requested());
        shutdown.wait();
        rt.block_on(shutdown.requested());
    }
}
