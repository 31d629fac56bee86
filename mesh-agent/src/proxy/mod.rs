//! The transparent proxy: accept redirected connections, recover the
//! original destination and identity from the kernel, sniff what the agent
//! speaks, and either relay bytes (opaque TCP, TLS passthrough) or serve
//! HTTP and decide every call in it ([`http`]).
pub mod body;
pub mod http;
pub mod io;
pub mod pool;
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
mod tests {
    //! The proxy's logic over in-memory maps: no root, no BPF.
    use std::net::SocketAddr;

    use hyper::service::service_fn;
    use mesh_common::{agent_id, CgroupTag};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::budget::SystemClock;
    use crate::{
        bpf::maps::MemoryMaps,
        policy::{PolicySet, PolicyStore},
        state::CgroupLayout,
    };

    struct Fixture {
        maps: Arc<MemoryMaps>,
        records: Arc<RecordLog>,
        policies: Arc<PolicyStore>,
        ledger: Arc<Ledger>,
        listen: SocketAddr,
        _shutdown: watch::Sender<bool>,
    }

    async fn fixture(policy: &str) -> Fixture {
        let maps = Arc::new(MemoryMaps::default());
        let mut name = [0u8; mesh_common::AGENT_NAME_MAX];
        name[..3].copy_from_slice(b"bot");
        maps.tags.lock().unwrap().insert(
            7,
            CgroupTag {
                agent_id: agent_id(b"bot"),
                flags: 0,
                agent_name: name,
            },
        );
        let layout = CgroupLayout {
            cgroup_root: "/nonexistent".into(),
            attach_cgroup: "/nonexistent/a".into(),
            parent_cgroup: "/nonexistent/a/p".into(),
        };
        let governor = Arc::new(Governor::new(maps.clone(), layout).unwrap());
        let policy = PolicySet::from_files(&[("p.yaml".into(), policy.into())]).unwrap();
        let records = Arc::new(RecordLog::new(16));
        let policies = Arc::new(PolicyStore::new(policy));
        let ledger = Arc::new(Ledger::in_memory(Arc::new(SystemClock)));
        let proxy = Arc::new(Proxy::new(ProxyParts {
            governor,
            orig_dst: maps.clone(),
            policies: policies.clone(),
            records: records.clone(),
            metrics: Arc::new(Metrics::new(None, None)),
            ledger: ledger.clone(),
            upstream_mark: None,
            l7: L7Settings {
                body_limit: 1024,
                sniff_timeout: Duration::from_millis(50),
            },
            mesh_ca: None,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(proxy.serve(listener, rx));
        Fixture {
            maps,
            records,
            policies,
            ledger,
            listen,
            _shutdown: tx,
        }
    }

    /// A client socket whose address is recorded, as sock_ops would, before it connects.
    async fn governed_client(f: &Fixture, dst: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = ClientAddr(socket.local_addr().unwrap());
        let ip = match dst.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        f.maps.peers.lock().unwrap().insert(
            local.peer_key(),
            mesh_common::OrigDst {
                addr: crate::addr::ip6_words(ip),
                port: dst.port(),
                family: 2,
                agent_id: agent_id(b"bot"),
                cgroup_id: 8,
                governing_cgroup_id: 7,
                tgid: 4242,
                uid: 1000,
            },
        );
        socket.connect(f.listen).await.unwrap()
    }

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn wait_records(records: &RecordLog, n: usize) -> Vec<ConnectionRecord> {
        for _ in 0..200 {
            let got = records.tail(100);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        records.tail(100)
    }

    fn policy_allowing(dst: &str) -> String {
        format!(
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: bot\negress:\n  allow: [\"{dst}\"]\n"
        )
    }

    #[tokio::test]
    async fn forwards_to_the_original_destination_and_records_who() {
        let upstream = echo_server().await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let mut client = governed_client(&f, upstream).await;
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"ping");
        let records = wait_records(&f.records, 1).await;
        let r = &records[0];
        assert_eq!(r.verdict, Verdict::Forwarded);
        assert_eq!(r.agent.as_deref(), Some("bot"));
        assert_eq!(
            (r.pid, r.uid, r.cgroup_id, r.governing_cgroup_id),
            (4242, 1000, 8, 7)
        );
        assert_eq!(
            r.original_destination.as_deref(),
            Some(upstream.to_string().as_str())
        );
        assert_eq!((r.bytes_to_upstream, r.bytes_to_client), (4, 4));
        assert!(
            f.maps.peers.lock().unwrap().is_empty(),
            "the entry is consumed"
        );
    }

    #[tokio::test]
    async fn refused_egress_closes_the_connection_and_says_why() {
        let upstream = echo_server().await;
        let f = fixture(&policy_allowing("127.0.0.9:1")).await;
        let mut client = governed_client(&f, upstream).await;
        let mut buf = [0u8; 8];
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "closed without a byte");
        let records = wait_records(&f.records, 1).await;
        assert_eq!(records[0].verdict, Verdict::RefusedPolicy);
        assert_eq!(records[0].rule.as_deref(), Some("egress.default"));
    }

    #[tokio::test]
    async fn a_connection_without_a_kernel_record_is_never_dialled() {
        let f = fixture(&policy_allowing("*")).await;
        let mut client = TcpStream::connect(f.listen).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0);
        let records = wait_records(&f.records, 1).await;
        assert_eq!(records[0].verdict, Verdict::NoOriginalDestination);
        assert!(records[0].original_destination.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_destination_is_reset_and_recorded() {
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let f = fixture(&policy_allowing(&closed.to_string())).await;
        let mut client = governed_client(&f, closed).await;
        let mut buf = [0u8; 8];
        assert!(matches!(client.read(&mut buf).await, Ok(0) | Err(_)));
        let records = wait_records(&f.records, 1).await;
        assert_eq!(records[0].verdict, Verdict::UpstreamFailed);
        assert!(
            records[0]
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("refused"),
            "{:?}",
            records[0]
        );
    }

    /// An HTTP/1.1 upstream answering every POST like an MCP server would:
    /// JSON for requests, or an SSE stream when the path is `/sse-answer`.
    async fn mcp_upstream() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let sse = req.uri().path() == "/sse-answer";
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let reply = serde_json::json!({"jsonrpc":"2.0","id":v["id"],
                            "result":{"content":[{"type":"text","text":"5"}],"isError":false}});
                        let (ct, text) = if sse {
                            (
                                "text/event-stream",
                                format!("id: p1\ndata:\n\nevent: message\ndata: {reply}\n\n"),
                            )
                        } else {
                            ("application/json", reply.to_string())
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", ct)
                                .body(http_body_util::Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn post(path: &str, body: &str, extra: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nhost: tools.example\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn exchange(f: &Fixture, dst: SocketAddr, request: &str) -> String {
        let mut client = governed_client(f, dst).await;
        client.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn call_record(f: &Fixture) -> ConnectionRecord {
        for _ in 0..200 {
            if let Some(r) = f.records.tail(100).into_iter().find(|r| r.call.is_some()) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no call record in {:?}", f.records.tail(100));
    }

    const TOOLS_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;

    #[tokio::test]
    async fn an_mcp_call_is_parsed_forwarded_and_its_outcome_recorded() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains(r#""text":"5""#), "{resp}");
        let r = call_record(&f).await;
        assert_eq!(r.protocol, Some(Protocol::Mcp));
        assert_eq!(r.verdict, Verdict::Forwarded);
        let call = r.call.unwrap();
        assert_eq!(call.method, "tools/call");
        assert_eq!(call.name.as_deref(), Some("add"));
        assert_eq!(
            call.arguments.as_ref().map(|a| a.to_value()),
            Some(serde_json::json!({"a":2,"b":3}))
        );
        assert_eq!(call.outcome.as_deref(), Some("result"));
        assert_eq!(r.server_name.as_deref(), Some("tools.example"));
    }

    #[tokio::test]
    async fn an_sse_answer_is_matched_to_its_call() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let resp = exchange(&f, upstream, &post("/sse-answer", TOOLS_CALL, "")).await;
        assert!(resp.contains("event: message"), "{resp}");
        let call = call_record(&f).await.call.unwrap();
        assert_eq!(call.outcome.as_deref(), Some("result"));
        assert_eq!(call.jsonrpc_id, Some(crate::l7::RpcId::Number(3)));
    }

    #[tokio::test]
    async fn a_refused_call_gets_the_jsonrpc_error_naming_the_rule() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_allowing("127.0.0.9:1")).await;
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains(r#""code":-32001"#), "{resp}");
        assert!(resp.contains(r#""rule":"egress.default""#), "{resp}");
        let r = call_record(&f).await;
        assert_eq!(r.verdict, Verdict::RefusedPolicy);
    }

    #[tokio::test]
    async fn malformed_and_oversized_bodies_are_refused_and_the_proxy_keeps_serving() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let truncated = exchange(
            &f,
            upstream,
            &post("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#, ""),
        )
        .await;
        assert!(truncated.starts_with("HTTP/1.1 400"), "{truncated}");
        assert!(truncated.contains("-32700"), "{truncated}");
        let batch = exchange(&f, upstream, &post("/mcp", &format!("[{TOOLS_CALL}]"), "")).await;
        assert!(batch.starts_with("HTTP/1.1 400"), "{batch}");
        assert!(batch.contains("-32600"), "{batch}");
        // The fixture's limit is 1 KiB.
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{}"}}}}"#,
            "x".repeat(2000)
        );
        let too_large = exchange(&f, upstream, &post("/mcp", &big, "")).await;
        assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
        let ok = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[tokio::test]
    async fn mcp_headers_that_disagree_with_the_body_are_refused() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let headers =
            "mcp-protocol-version: 2026-07-28\r\nmcp-method: tools/call\r\nmcp-name: read_file\r\n";
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, headers)).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        let r = call_record(&f).await;
        assert_eq!(r.verdict, Verdict::Malformed);
    }

    /// A raw upstream: reads one request head, writes `reply`, then echoes
    /// (when `echo`) or closes.
    async fn raw_upstream(reply: &'static [u8], echo: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    // The request may carry a body: for these tests, small.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), s.read(&mut [0u8; 4096]))
                            .await;
                    s.write_all(reply).await.unwrap();
                    if echo {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_upgrade_becomes_a_byte_relay() {
        let upstream = raw_upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
            true,
        )
        .await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let mut client = governed_client(&f, upstream).await;
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{head:?}");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        client.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
        drop(client);
        let r = call_record(&f).await;
        assert_eq!(r.call.unwrap().http_status, 101);
    }

    #[tokio::test]
    async fn a_cut_llm_stream_is_recorded_with_estimated_tokens() {
        let upstream = raw_upstream(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
              4c\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello world, this is\"}}]}\n\n\r\n",
            false,
        )
        .await;
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let body =
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let r = call_record(&f).await;
        assert_eq!(r.protocol, Some(Protocol::Llm));
        let call = r.call.unwrap();
        assert_eq!(call.method, "chat.completions");
        assert_eq!(call.name.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(call.outcome.as_deref(), Some("cut"), "{call:?}");
        let usage = call.usage.expect("estimated usage");
        assert!(usage.estimated);
        assert_eq!(usage.output_tokens, 5, "20 characters, about 4 per token");
    }

    /// `policy_allowing(dst)` with one budget.
    fn policy_with_budget(dst: &str, budget: &str) -> String {
        format!("{}budgets:\n  - {budget}\n", policy_allowing(dst))
    }

    /// The ledger's view of the fixture agent's first budget.
    fn first_budget(f: &Fixture) -> crate::budget::BudgetView {
        let policy = f.policies.snapshot();
        f.ledger.view("bot", &policy.budgets("bot")[0])
    }

    const CHAT_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;

    #[tokio::test]
    async fn a_budgeted_stream_ends_cleanly_at_its_reservation() {
        // Three events of 20 characters (5 tokens each) and the end; the
        // call reserved 8 output tokens, so the second event would pass it.
        let upstream = raw_upstream(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 242\r\n\r\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"aaaaaaaaaaaaaaaaaaaa\"}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bbbbbbbbbbbbbbbbbbbb\"}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cccccccccccccccccccc\"}}]}\n\n\
              data: [DONE]\n\n",
            false,
        )
        .await;
        let f = fixture(&policy_with_budget(
            &upstream.to_string(),
            "{ name: t, limit: { tokens: 100000 }, window: 1h, on_exhaust: halt }",
        ))
        .await;
        let resp = exchange(
            &f,
            upstream,
            &post("/v1/chat/completions", CHAT_STREAM_BODY, ""),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("aaaaaaaaaaaaaaaaaaaa"), "{resp}");
        assert!(
            !resp.contains("bbbb"),
            "the event past the bound went out: {resp}"
        );
        // The last event is the API's own end, then the chunked body's end.
        assert!(
            resp.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"),
            "no clean end: {resp:?}"
        );
        let r = call_record(&f).await;
        let reason = r.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("reservation of 8 output tokens"),
            "{reason}"
        );
        let budget = r.call.unwrap().budget.expect("budget in the record");
        assert!(budget.cut);
        let input_bound = CHAT_STREAM_BODY.len() as u64;
        assert_eq!(budget.reserved.tokens, input_bound + 8);
        // Settled at the estimate: the whole prompt plus the 5 tokens sent.
        let settled = budget.settled.expect("settled");
        assert_eq!(settled.tokens, input_bound + 5);
        let view = first_budget(&f);
        assert_eq!((view.used, view.reserved), (input_bound + 5, 0));
    }

    #[tokio::test]
    async fn a_json_llm_response_settles_its_usage_and_a_call_over_budget_gets_429() {
        let upstream = raw_upstream(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n\
              {\"choices\":[{\"message\":{\"content\":\"Hi there\"}}],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}",
            false,
        )
        .await;
        let body = r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        // Room for the first call's reservation, not for a second one after
        // the first settled at 18 tokens.
        let limit = body.len() as u64 + 10 + 17;
        let f = fixture(&policy_with_budget(
            &upstream.to_string(),
            &format!("{{ name: t, limit: {{ tokens: {limit} }}, window: 1h, on_exhaust: halt }}"),
        ))
        .await;
        let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("Hi there"), "{resp}");
        let view = first_budget(&f);
        assert_eq!((view.used, view.reserved), (18, 0));

        let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
        assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("retry-after: "),
            "{resp}"
        );
        let json = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "mesh_budget");
        assert_eq!(v["error"]["mesh"]["rule"], "budgets[t]");
        assert_eq!(first_budget(&f).used, 18, "a refusal spends nothing");
    }

    #[tokio::test]
    async fn a_call_budget_refuses_the_call_past_it_and_quarantines() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_with_budget(
            &upstream.to_string(),
            "{ name: runaway, limit: { calls: 2 }, window: 1m, on_exhaust: quarantine }",
        ))
        .await;
        for _ in 0..2 {
            let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
            assert!(resp.contains(r#""text":"5""#), "{resp}");
        }
        assert_eq!(first_budget(&f).used, 2);
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.contains("-32001") && resp.contains("budgets[runaway]"),
            "{resp}"
        );
        // The quarantine follows the refusal, once it is sent.
        let mut quarantined = false;
        for _ in 0..200 {
            quarantined = f.maps.tags.lock().unwrap()[&7].quarantined();
            if quarantined {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(quarantined, "the agent was not quarantined");
        assert_eq!(first_budget(&f).used, 2);
    }

    #[tokio::test]
    async fn a_model_without_a_price_under_a_usd_budget_is_refused_for_good() {
        // Never dialled: the refusal comes before forwarding.
        let upstream = raw_upstream(
            b"HTTP/1.1 500 Unexpected\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        let f = fixture(&policy_with_budget(
            &upstream.to_string(),
            "{ name: spend, limit: { usd: 5 }, window: 24h, on_exhaust: halt }",
        ))
        .await;
        let body = r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("has no entry in prices"), "{resp}");
        assert!(resp.contains(r#""code":"mesh_policy""#), "{resp}");
        assert!(resp.contains("budgets[spend]"), "{resp}");
        assert_eq!(first_budget(&f).used, 0);
    }

    #[tokio::test]
    async fn an_escalating_budget_answers_a_hold_that_says_approval_is_required() {
        let upstream = mcp_upstream().await;
        let f = fixture(&policy_with_budget(
            &upstream.to_string(),
            "{ name: calls, limit: { calls: 1 }, window: 1h, on_exhaust: escalate }",
        ))
        .await;
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(resp.contains(r#""text":"5""#), "{resp}");
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(
            resp.contains("-32001") && resp.contains("budgets[calls]"),
            "{resp}"
        );
        assert!(resp.contains("approval required"), "{resp}");
        let held = wait_records(&f.records, 2)
            .await
            .into_iter()
            .find(|r| r.verdict == Verdict::Held)
            .expect("a held record");
        assert_eq!(held.rule.as_deref(), Some("budgets[calls]"));
        assert!(!f.maps.tags.lock().unwrap()[&7].quarantined());
    }

    #[tokio::test]
    async fn http2_prior_knowledge_is_parsed_and_forwarded_as_http2() {
        // An h2c upstream that answers a JSON-RPC result and says which
        // protocol version and authority it saw.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let seen = format!("{:?} {}", req.version(), req.uri());
                        let reply =
                            serde_json::json!({"jsonrpc":"2.0","id":3,"result":{"seen":seen}});
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(Bytes::from(reply.to_string())))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let f = fixture(&policy_allowing(&upstream.to_string())).await;
        let client = governed_client(&f, upstream).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post("http://tools.example/mcp")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from_static(
                TOOLS_CALL.as_bytes(),
            )))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["result"]["seen"], "HTTP/2.0 http://tools.example/mcp");
        let r = call_record(&f).await;
        let call = r.call.unwrap();
        assert_eq!(call.name.as_deref(), Some("add"));
        assert_eq!(call.outcome.as_deref(), Some("result"));
        assert_eq!(r.server_name.as_deref(), Some("tools.example"));
    }
}
