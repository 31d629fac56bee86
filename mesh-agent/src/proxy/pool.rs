//! Upstream HTTP connections, pooled per original destination (and TLS name),
//! so keep-alive works on both legs: an agent's many MCP calls ride a few
//! upstream connections instead of one TCP handshake each.
//!
//! HTTP/1.1 connections are taken out while a request is in flight and are
//! reusable once hyper says they are ready again (the previous response body
//! was read to its end); HTTP/2 connections are shared.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::conn::{connect_upstream, SocketFactory};
use crate::{
    addr::OrigDst,
    config::{POOL_MAX_IDLE_PER_KEY, POOL_SHARDS},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Which upstream connections a request may share.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub dst: SocketAddr,
    /// Present when the upstream leg is TLS: the name to verify and send as SNI.
    pub tls_name: Option<Arc<str>>,
    /// The extra CA the upstream was verified against: a connection verified
    /// under one agent's trust is never reused under another's.
    pub upstream_ca: Option<Arc<str>>,
    /// Whether to speak HTTP/2 (prior knowledge in clear text; offered by ALPN
    /// over TLS, where the server may still choose HTTP/1.1).
    pub h2: bool,
}

/// How to open the upstream TLS leg.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The extra CA file `config` trusts besides the system roots.
    pub extra_ca: Option<Arc<str>>,
}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {dst}: {source}")]
    Connect {
        dst: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS to {name}: {source}")]
    Tls {
        name: String,
        source: std::io::Error,
    },
    #[error("invalid TLS server name {0:?}")]
    TlsName(String),
    #[error("HTTP handshake with {dst}: {source}")]
    Handshake {
        dst: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream request: {0}")]
    Request(#[from] hyper::Error),
}

/// Pooled upstream connections, kept per proxy worker (see `workers.rs`): a
/// connection's task runs on the worker that opened it, so reusing it from
/// that worker only keeps a request on one thread. Workers beyond
/// [`POOL_SHARDS`] share shards.
pub struct UpstreamPool {
    sockets: Arc<dyn SocketFactory>,
    shards: [Mutex<HashMap<PoolKey, Vec<Sender>>>; POOL_SHARDS],
}

impl UpstreamPool {
    pub fn new(sockets: Arc<dyn SocketFactory>) -> UpstreamPool {
        UpstreamPool {
            sockets,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// This worker's idle connections.
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Sender>>> {
        self.shards[super::workers::current() % POOL_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` (its URI in origin form, with a Host header) to the key's
    /// destination on a pooled connection or a new one.
    pub async fn send(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // A pooled connection may have been closed by the server just now:
        // hyper hands the request back unsent, and it goes on a new one.
        while let Some(sender) = self.checkout(key) {
            match self.try_send(key, sender, req).await {
                Ok(resp) => return Ok(resp),
                Err(Retry::Unsent(back)) => req = back,
                Err(Retry::Failed(e)) => return Err(e),
            }
        }
        let sender = self.dial(key, tls).await?;
        match self.try_send(key, sender, req).await {
            Ok(resp) => Ok(resp),
            Err(Retry::Unsent(_)) => Err(UpstreamError::Connect {
                dst: key.dst,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "new upstream connection closed before the request was sent",
                ),
            }),
            Err(Retry::Failed(e)) => Err(e),
        }
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle();
        let senders = idle.get_mut(key)?;
        senders.retain(|s| !s.is_closed());
        let found = senders.iter().position(|s| match s {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(_) => true,
        })?;
        Some(match &senders[found] {
            // HTTP/2 is multiplexed: it stays in the pool, shared.
            Sender::H2(s) => Sender::H2(s.clone()),
            Sender::H1(_) => senders.swap_remove(found),
        })
    }

    fn checkin(&self, key: &PoolKey, sender: Sender) {
        let mut idle = self.idle();
        let senders = idle.entry(key.clone()).or_default();
        if senders.len() < POOL_MAX_IDLE_PER_KEY {
            senders.push(sender);
        }
    }

    async fn try_send(
        &self,
        key: &PoolKey,
        sender: Sender,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Retry> {
        match sender {
            Sender::H1(mut s) => {
                let req = to_http1(req);
                let sent = s.try_send_request(req);
                // Back in the pool at once: it becomes ready again when this
                // response's body has been read, and checkout skips it until then.
                self.checkin(key, Sender::H1(s));
                sent.await.map_err(Retry::from)
            }
            Sender::H2(mut s) => {
                let req = to_http2(req, key);
                s.try_send_request(req).await.map_err(Retry::from)
            }
        }
    }

    async fn dial(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
    ) -> Result<Sender, UpstreamError> {
        let tcp = connect_upstream(self.sockets.as_ref(), OrigDst(key.dst))
            .await
            .map_err(|source| UpstreamError::Connect {
                dst: key.dst,
                source,
            })?;
        match (&key.tls_name, tls) {
            (Some(name), Some(tls)) => {
                let server_name = ServerName::try_from(name.to_string())
                    .map_err(|_| UpstreamError::TlsName(name.to_string()))?;
                let stream = TlsConnector::from(tls.config.clone())
                    .connect(server_name, tcp)
                    .await
                    .map_err(|source| UpstreamError::Tls {
                        name: name.to_string(),
                        source,
                    })?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.handshake(key, TokioIo::new(stream), h2).await
            }
            _ => self.handshake(key, TokioIo::new(tcp), key.h2).await,
        }
    }

    async fn handshake<T>(&self, key: &PoolKey, io: T, h2: bool) -> Result<Sender, UpstreamError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let dst = key.dst;
        let failed = |source| UpstreamError::Handshake { dst, source };
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(%dst, error = %e, "upstream h2 connection ended");
                }
            });
            self.checkin(key, Sender::H2(sender.clone()));
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(failed)?;
            tokio::spawn(async move {
                // with_upgrades: a 101 hands the connection to the proxy.
                if let Err(e) = conn.with_upgrades().await {
                    debug!(%dst, error = %e, "upstream h1 connection ended");
                }
            });
            Ok(Sender::H1(sender))
        }
    }
}

enum Retry {
    Unsent(Request<ProxyBody>),
    Failed(UpstreamError),
}

impl From<hyper::client::conn::TrySendError<Request<ProxyBody>>> for Retry {
    fn from(mut e: hyper::client::conn::TrySendError<Request<ProxyBody>>) -> Retry {
        match e.take_message() {
            Some(req) => Retry::Unsent(req),
            None => Retry::Failed(UpstreamError::Request(e.into_error())),
        }
    }
}

/// HTTP/1.1 wants the origin form and a Host header (taken from the
/// authority when the agent spoke HTTP/2).
fn to_http1(mut req: Request<ProxyBody>) -> Request<ProxyBody> {
    if !req.headers().contains_key(hyper::header::HOST) {
        if let Some(value) = req
            .uri()
            .authority()
            .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(hyper::header::HOST, value);
        }
    }
    if req.uri().scheme().is_some() {
        let origin = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/"));
        *req.uri_mut() = origin;
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    req
}

/// HTTP/2 wants scheme and authority in the URI (`:scheme`, `:authority`);
/// the authority comes from the Host header when the agent spoke HTTP/1.1.
fn to_http2(mut req: Request<ProxyBody>, key: &PoolKey) -> Request<ProxyBody> {
    if req.uri().authority().is_none() {
        let authority = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| key.tls_name.as_deref().map(str::to_owned))
            .unwrap_or_else(|| key.dst.to_string());
        let scheme = if key.tls_name.is_some() {
            "https"
        } else {
            "http"
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("{scheme}://{authority}{path}").parse() {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().remove(hyper::header::HOST);
    *req.version_mut() = hyper::Version::HTTP_2;
    req
}
