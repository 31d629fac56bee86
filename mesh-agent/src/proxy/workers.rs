//! Proxy worker threads: one single-threaded tokio runtime per CPU, each
//! accepting on its own clone of the listeners.
//!
//! A proxied request wakes two tasks: the client connection's and the pooled
//! upstream connection's (hyper drives each connection in its own task). On a
//! work-stealing runtime they often land on different threads, and every
//! request then pays cross-thread wake-ups (futex, cache misses) on its way
//! out and back. Here a connection, everything it spawns, and the upstream
//! connections it uses (the pool is sharded by worker) stay on one thread,
//! as in nginx's worker processes. Shared state (policy, records, metrics,
//! sessions) is the same across workers.
//!
//! Every worker polls the same listening sockets (`try_clone`d file
//! descriptors in each worker's epoll); the kernel wakes them all for a new
//! connection and one wins `accept` — a thundering herd of at most one per
//! CPU.
use std::{
    cell::Cell,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::warn;

use super::Proxy;
use crate::config::WORKER_DRAIN_POLL_INTERVAL;

thread_local! {
    /// 1-based index of the proxy worker running on this thread; 0 elsewhere.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The proxy worker this thread is, 0 when it is none (tests, control plane).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// The running workers; [`ProxyWorkers::join`] waits for them to drain.
pub struct ProxyWorkers {
    threads: Vec<JoinHandle<()>>,
}

impl ProxyWorkers {
    /// Starts `count` workers serving `listeners` until `shutdown` turns
    /// true, then lets connections in flight finish for up to `drain`.
    pub fn start(
        proxy: Arc<Proxy>,
        listeners: &[std::net::TcpListener],
        count: usize,
        shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) -> std::io::Result<ProxyWorkers> {
        let mut threads = Vec::with_capacity(count);
        for index in 1..=count.max(1) {
            let clones = listeners
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let proxy = proxy.clone();
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mesh-proxy-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    runtime.block_on(worker(proxy, clones, shutdown, drain));
                })?;
            threads.push(thread);
        }
        Ok(ProxyWorkers { threads })
    }

    /// Waits (blocking) for every worker to stop.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                warn!("a proxy worker panicked");
            }
        }
    }
}

async fn worker(
    proxy: Arc<Proxy>,
    listeners: Vec<std::net::TcpListener>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut serving = Vec::with_capacity(listeners.len());
    for listener in listeners {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                serving.push(tokio::spawn(
                    proxy.clone().serve(listener, shutdown.clone()),
                ));
            }
            Err(e) => warn!(error = %e, "proxy worker: registering a listener"),
        }
    }
    for s in serving {
        let _ = s.await;
    }
    // The listeners are closed in this worker; its connections in flight
    // live on this runtime and finish only while it runs.
    let deadline = Instant::now() + drain;
    while proxy.active.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(WORKER_DRAIN_POLL_INTERVAL).await;
    }
}
