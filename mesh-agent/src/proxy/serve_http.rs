//! HTTP on an agent's connection (clear text, or decrypted by `terminate.rs`):
//! hyper serves HTTP/1.1 or HTTP/2 and hands every request to
//! [`HttpConn`](super::http::HttpConn); the connection itself gets a record
//! only when the agent broke the protocol.
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tracing::debug;

use super::{
    http::{HttpConn, TlsLeg},
    Conn, Proxy,
};
use crate::records::Verdict;

impl Proxy {
    /// Serves HTTP/1.1 or HTTP/2 on an agent's connection until it closes
    /// (or the daemon drains: then in-flight requests finish first).
    pub(super) async fn serve_http<I>(
        self: Arc<Self>,
        conn: Conn,
        agent: Arc<str>,
        io: I,
        h2: bool,
        tls: Option<TlsLeg>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = Arc::new(HttpConn {
            proxy: self.clone(),
            conn,
            agent,
            tls,
            h2,
        });
        let svc_conn = http.clone();
        let service = service_fn(move |req| svc_conn.clone().serve(req));
        let io = TokioIo::new(io);
        let result = if h2 {
            let c = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service);
            tokio::pin!(c);
            drive(c.as_mut(), &mut shutdown, |c| c.graceful_shutdown()).await
        } else {
            // No half_close: an agent's EOF ends its requests, so a client
            // that went away never leaves an upstream stream (SSE) open. The
            // price: a client that shuts down only its sending side after a
            // request gets no response (nginx behaves the same by default).
            let c = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.l7.header_read_timeout)
                .keep_alive(true)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(c);
            drive(c.as_mut(), &mut shutdown, |c| c.graceful_shutdown()).await
        };
        // Each request has its record; the connection gets one only when it
        // broke the protocol (garbage after the HTTP/2 preface, a bad
        // request line), so that is on record too. A client that simply went
        // away mid-response is not a protocol error.
        if let Err(e) = result {
            if is_protocol_violation(&e) {
                let reason = format!("HTTP connection ended: {e}");
                debug!(%reason);
                self.finish(
                    &http.conn,
                    Verdict::Malformed,
                    "l7.http",
                    Some(reason),
                    (0, 0),
                );
            } else {
                debug!(error = %e, "HTTP connection ended early");
            }
        }
    }
}

/// Runs a hyper connection to its end; when the daemon drains, asks it to
/// finish the requests in flight and close.
async fn drive<C, E>(
    mut c: std::pin::Pin<&mut C>,
    shutdown: &mut watch::Receiver<bool>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut graceful = Some(graceful);
    loop {
        tokio::select! {
            r = c.as_mut() => return r,
            changed = shutdown.changed(), if graceful.is_some() => {
                if changed.is_err() || *shutdown.borrow() {
                    if let Some(g) = graceful.take() {
                        g(c.as_mut());
                    }
                }
            }
        }
    }
}

/// Whether a hyper server error means the agent broke HTTP (a parse error, an
/// HTTP/2 protocol error), as opposed to closing or resetting its connection.
fn is_protocol_violation(e: &hyper::Error) -> bool {
    if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return !h2.is_io()
                && h2
                    .reason()
                    .is_some_and(|r| r != h2::Reason::NO_ERROR && r != h2::Reason::CANCEL);
        }
        source = s.source();
    }
    false
}
