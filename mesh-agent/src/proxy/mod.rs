//! The transparent proxy: accept redirected connections, recover the
//! original destination and identity from the kernel, sniff what the agent
//! speaks, and either relay bytes (opaque TCP, TLS passthrough) or serve
//! HTTP and decide every call in it ([`http`]).
pub mod budget;
pub mod filter;
pub mod http;
pub mod io;
pub mod pool;
pub mod refuse;
pub mod relay;
pub mod sniff;
pub mod tls;
pub mod workers;

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tracing::{debug, info_span, warn, Instrument as _};

use self::{
    http::{HttpConn, Sessions, TlsLeg},
    io::Prefixed,
    pool::{UpstreamPool, UpstreamTls},
    sniff::{SniffStatus, Sniffed},
    tls::MeshCa,
};
use crate::{
    addr::{ClientAddr, OrigDst},
    bpf::OrigDstSource,
    budget::Ledger,
    config::{SNIFF_TIMEOUT, UPSTREAM_CONNECT_TIMEOUT},
    l7::Protocol,
    metrics::Metrics,
    policy::{EgressDecision, EgressPolicy, PolicyStore, TlsMode},
    records::{unix_ms, ConnectionRecord, Identity, RecordLog, Verdict},
    state::Governor,
};

/// L7 settings.
#[derive(Clone, Debug)]
pub struct L7Settings {
    /// Largest request body buffered for inspection.
    pub body_limit: usize,
    /// How long to wait for a client's first bytes.
    pub sniff_timeout: Duration,
}

impl Default for L7Settings {
    fn default() -> Self {
        L7Settings {
            body_limit: crate::config::DEFAULT_MAX_BODY_BYTES,
            sniff_timeout: SNIFF_TIMEOUT,
        }
    }
}

/// Everything a connection task needs, shared.
pub struct Proxy {
    pub governor: Arc<Governor>,
    pub orig_dst: Arc<dyn OrigDstSource>,
    /// The policy in force; each connection and each request decides from
    /// one snapshot of it.
    pub policies: Arc<PolicyStore>,
    pub records: Arc<RecordLog>,
    pub metrics: Arc<Metrics>,
    /// Budget spend: reserved before a call is forwarded, settled after.
    pub ledger: Arc<Ledger>,
    pub active: ActiveConnections,
    /// SO_MARK for upstream sockets (`MESH_SOCKET_MARK` in the daemon; `None`
    /// only in unprivileged tests, where setting a mark is not permitted).
    pub upstream_mark: Option<u32>,
    pub l7: L7Settings,
    pub pool: UpstreamPool,
    pub sessions: Arc<Sessions>,
    /// The CA that signs leaves for `tls: terminate` (None: terminate is
    /// unavailable and such connections are refused).
    pub mesh_ca: Option<Arc<MeshCa>>,
    /// Upstream TLS client configs by (extra CA file, HTTP/2 offered).
    upstream_tls: Mutex<HashMap<UpstreamTlsKey, UpstreamTls>>,
}

/// An upstream TLS client config's key: the extra CA file and whether HTTP/2
/// is offered.
type UpstreamTlsKey = (Option<Arc<str>>, bool);

/// Counts connections in flight, for draining on shutdown.
#[derive(Clone, Default)]
pub struct ActiveConnections(Arc<AtomicUsize>);

pub struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveConnections {
    pub fn enter(&self) -> ActiveGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.0.clone())
    }
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The parts of a [`Proxy`] that are not shared state.
pub struct ProxyParts {
    pub governor: Arc<Governor>,
    pub orig_dst: Arc<dyn OrigDstSource>,
    pub policies: Arc<PolicyStore>,
    pub records: Arc<RecordLog>,
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    pub upstream_mark: Option<u32>,
    pub l7: L7Settings,
    pub mesh_ca: Option<Arc<MeshCa>>,
}

impl Proxy {
    pub fn new(p: ProxyParts) -> Proxy {
        Proxy {
            governor: p.governor,
            orig_dst: p.orig_dst,
            policies: p.policies,
            records: p.records,
            metrics: p.metrics,
            ledger: p.ledger,
            active: ActiveConnections::default(),
            upstream_mark: p.upstream_mark,
            l7: p.l7,
            pool: UpstreamPool::new(p.upstream_mark),
            sessions: Arc::new(Sessions::default()),
            mesh_ca: p.mesh_ca,
            upstream_tls: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let guard = self.active.enter();
                        let proxy = self.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            proxy.handle(stream, ClientAddr(peer), shutdown).await;
                            drop(guard);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = shutdown.changed() => {
                    // A dropped sender (the daemon is gone) also ends serving,
                    // instead of waking this loop forever.
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        client: TcpStream,
        client_addr: ClientAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut conn = Conn {
            started: SystemTime::now(),
            clock: Instant::now(),
            client: client_addr,
            identity: None,
            dst: None,
            protocol: None,
            server_name: None,
        };
        let Some(kernel) = self.orig_dst.take(&client_addr.peer_key()) else {
            // Not redirected by our programs (a direct connection to the
            // listener): never dial anything for it.
            let reason = "the kernel recorded no original destination for this connection";
            self.finish(
                &conn,
                Verdict::NoOriginalDestination,
                "no-original-destination",
                Some(reason.into()),
                (0, 0),
            );
            return;
        };
        let dst = OrigDst::from_kernel(&kernel.addr, kernel.port);
        let agent = self.governor.agent_name(kernel.agent_id);
        let span = info_span!(
            "conn",
            agent = agent.as_deref().unwrap_or("-"),
            cgroup_id = kernel.cgroup_id,
            pid = kernel.tgid,
            dst = %dst,
        );
        conn.dst = Some(dst);
        conn.identity = Some(Identity::from_kernel(&kernel, agent));
        async {
            let Some(agent) = conn.identity.as_ref().and_then(|i| i.agent.clone()) else {
                let reason = format!(
                    "agent id {:#x} has no name (untagged meanwhile)",
                    kernel.agent_id
                );
                drop(client);
                self.finish(
                    &conn,
                    Verdict::RefusedPolicy,
                    "unknown-agent",
                    Some(reason),
                    (0, 0),
                );
                return;
            };
            let mut client = client;
            let (prefix, sniffed) = sniff_client(&mut client, self.l7.sniff_timeout).await;
            match sniffed {
                Sniffed::Opaque => {
                    conn.protocol = Some(Protocol::Tcp);
                    self.relay_opaque(conn, &agent, client, prefix).await;
                }
                Sniffed::Tls(hello) => {
                    conn.protocol = Some(Protocol::Tls);
                    conn.server_name = hello.sni.clone();
                    self.handle_tls(conn, agent, client, prefix, hello, shutdown)
                        .await;
                }
                Sniffed::Http1 | Sniffed::Http2PriorKnowledge => {
                    conn.protocol = Some(Protocol::Http);
                    let h2 = sniffed == Sniffed::Http2PriorKnowledge;
                    let io = Prefixed::new(prefix, client);
                    self.serve_http(conn, agent, io, h2, None, shutdown).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Opaque TCP and TLS passthrough: the L4/SNI decision, then bytes.
    async fn relay_opaque(&self, conn: Conn, agent: &str, client: TcpStream, prefix: Bytes) {
        let Some(dst) = conn.dst else { return };
        let rule = match self.policies.snapshot().decide_egress(
            agent,
            dst.normalized(),
            conn.server_name.as_deref(),
        ) {
            EgressDecision::Refuse { rule, reason } => {
                debug!(%rule, %reason, "egress refused");
                drop(client);
                self.finish(&conn, Verdict::RefusedPolicy, &rule, Some(reason), (0, 0));
                return;
            }
            EgressDecision::Allow { rule } => rule,
        };
        let mut upstream = match connect_upstream(dst, self.upstream_mark).await {
            Ok(upstream) => upstream,
            Err(e) => {
                // Reset, so the agent sees a failed connection as it would
                // have without the mesh.
                let _ = client.set_zero_linger();
                drop(client);
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    &rule,
                    Some(e.to_string()),
                    (0, 0),
                );
                return;
            }
        };
        // The bytes read while sniffing go first.
        if let Err(e) = upstream.write_all(&prefix).await {
            self.finish(
                &conn,
                Verdict::UpstreamFailed,
                &rule,
                Some(e.to_string()),
                (0, 0),
            );
            return;
        }
        let (up, down) = relay::relay(client, upstream).await;
        self.finish(
            &conn,
            Verdict::Forwarded,
            &rule,
            None,
            (up + prefix.len() as u64, down),
        );
    }

    async fn handle_tls(
        self: Arc<Self>,
        conn: Conn,
        agent: Arc<str>,
        client: TcpStream,
        prefix: Bytes,
        hello: sniff::ClientHello,
        shutdown: watch::Receiver<bool>,
    ) {
        let Some(dst) = conn.dst else { return };
        let sni = hello.sni.as_deref();
        let policy = self.policies.snapshot();
        let upstream_ca = match policy.tls_mode(&agent, dst.normalized(), sni) {
            TlsMode::Passthrough => return self.relay_opaque(conn, &agent, client, prefix).await,
            TlsMode::Terminate { upstream_ca } => upstream_ca,
        };
        // The L4/SNI decision first: a refused destination never sees a
        // handshake from the mesh either.
        if let EgressDecision::Refuse { rule, reason } =
            policy.decide_egress(&agent, dst.normalized(), sni)
        {
            drop(client);
            self.finish(&conn, Verdict::RefusedPolicy, &rule, Some(reason), (0, 0));
            return;
        }
        let Some(ca) = self.mesh_ca.clone() else {
            let reason = "tls: terminate is configured but the mesh CA is not available";
            self.finish(
                &conn,
                Verdict::RefusedPolicy,
                "tls.terminate",
                Some(reason.into()),
                (0, 0),
            );
            return;
        };
        // Offer the client only what the mesh speaks, in the client's order;
        // the upstream leg offers the protocol chosen here.
        let alpn: Vec<Vec<u8>> = hello
            .alpn
            .iter()
            .filter(|p| p.as_slice() == b"h2" || p.as_slice() == b"http/1.1")
            .cloned()
            .collect();
        let fallback = dst.0.ip().to_string();
        let config = match tls::server_config_for(ca, fallback, alpn) {
            Ok(c) => c,
            Err(e) => {
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(e.to_string()),
                    (0, 0),
                );
                return;
            }
        };
        let accepted = tokio_rustls::TlsAcceptor::from(config)
            .accept(Prefixed::new(prefix, client))
            .await;
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Typically the agent does not trust the mesh CA.
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(format!("TLS handshake with the agent failed: {e}")),
                    (0, 0),
                );
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let upstream = match self.upstream_tls(upstream_ca, h2) {
            Ok(u) => u,
            Err(e) => {
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(e),
                    (0, 0),
                );
                return;
            }
        };
        let leg = TlsLeg {
            sni: hello.sni.as_deref().map(Arc::from),
            upstream,
        };
        self.serve_http(conn, agent, stream, h2, Some(leg), shutdown)
            .await;
    }

    fn upstream_tls(&self, extra_ca: Option<Arc<str>>, h2: bool) -> Result<UpstreamTls, String> {
        let mut cache = self.upstream_tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = cache.get(&(extra_ca.clone(), h2)) {
            return Ok(u.clone());
        }
        let alpn = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = tls::client_config(extra_ca.as_deref().map(std::path::Path::new), alpn)
            .map_err(|e| e.to_string())?;
        let u = UpstreamTls {
            config,
            extra_ca: extra_ca.clone(),
        };
        cache.insert((extra_ca, h2), u.clone());
        Ok(u)
    }

    /// Serves HTTP/1.1 or HTTP/2 on an agent's connection until it closes
    /// (or the daemon drains: then in-flight requests finish first).
    async fn serve_http<I>(
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

    fn finish(
        &self,
        conn: &Conn,
        verdict: Verdict,
        rule: &str,
        reason: Option<String>,
        (up, down): (u64, u64),
    ) {
        let agent = conn.agent();
        let protocol = conn.protocol.unwrap_or(Protocol::Tcp);
        // HTTP connections count their requests, not themselves.
        if protocol != Protocol::Http {
            self.metrics.record_connection(agent, protocol, verdict);
        }
        self.records.push(ConnectionRecord {
            reason,
            bytes_to_upstream: up,
            bytes_to_client: down,
            duration_ms: conn.clock.elapsed().as_millis() as u64,
            protocol: conn.protocol.filter(|p| *p != Protocol::Tcp),
            server_name: conn.server_name.clone(),
            ..conn.record(
                self.records.next_id(),
                unix_ms(conn.started),
                verdict,
                rule.to_owned(),
            )
        });
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

/// Reads the client's first bytes until the protocol is known, the client
/// goes quiet for `timeout` (server-speaks-first protocols: opaque) or
/// closes. The bytes read are returned to be replayed.
async fn sniff_client(client: &mut TcpStream, timeout: Duration) -> (Bytes, Sniffed) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sniff::sniff(&buf) {
            SniffStatus::Done(s) if !buf.is_empty() => return (buf.freeze(), s),
            _ => {}
        }
        if buf.len() >= sniff::SNIFF_MAX_BYTES {
            let s = sniff::sniff_final(&buf);
            return (buf.freeze(), s);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            // Closed, failed or quiet: decide on what there is.
            _ => {
                let s = sniff::sniff_final(&buf);
                return (buf.freeze(), s);
            }
        }
    }
}

/// One accepted connection, as far as it is known.
pub struct Conn {
    started: SystemTime,
    clock: Instant,
    client: ClientAddr,
    identity: Option<Identity>,
    dst: Option<OrigDst>,
    protocol: Option<Protocol>,
    server_name: Option<String>,
}

impl Conn {
    fn agent(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.agent.as_deref())
    }

    /// A record of this connection (or of a request on it): who, from where,
    /// to where, and what was decided.
    fn record(
        &self,
        id: u64,
        start_unix_ms: u64,
        verdict: Verdict,
        rule: String,
    ) -> ConnectionRecord {
        ConnectionRecord {
            client: Some(self.client.to_string()),
            original_destination: self.dst.map(|d| d.to_string()),
            ..ConnectionRecord::new(id, start_unix_ms, self.identity.as_ref(), verdict, rule)
        }
    }
}

/// Dials the original destination from a socket marked as the mesh's own, so
/// the connect programs never redirect it (the second guard after not living
/// in a governed cgroup).
async fn connect_upstream(dst: OrigDst, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let target: SocketAddr = dst.0;
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    socket.set_nodelay(true)?;
    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "upstream connect timed out",
        )),
    }
}

fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt on a valid fd with a u32 option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
