//! The transparent L4 proxy: accept redirected connections, recover the
//! original destination and identity from the kernel, decide egress, and carry
//! bytes both ways to where the agent meant to go.
pub mod addr;
pub mod io;
pub mod pool;
pub mod refuse;
pub mod relay;
pub mod sniff;
pub mod tls;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tracing::{debug, info_span, warn, Instrument as _};

use self::addr::{ClientAddr, OrigDst};
use crate::{
    bpf::OrigDstSource,
    config::UPSTREAM_CONNECT_TIMEOUT,
    metrics::Metrics,
    policy::{EgressDecision, EgressPolicy},
    records::{unix_ms, ConnectionRecord, RecordLog, Verdict},
    state::Governor,
};

/// Everything a connection task needs, shared.
pub struct Proxy {
    pub governor: Arc<Governor>,
    pub orig_dst: Arc<dyn OrigDstSource>,
    pub policy: Arc<dyn EgressPolicy>,
    pub records: Arc<RecordLog>,
    pub metrics: Arc<Metrics>,
    pub active: ActiveConnections,
    /// SO_MARK for upstream sockets (`MESH_SOCKET_MARK` in the daemon; `None`
    /// only in unprivileged tests, where setting a mark is not permitted).
    pub upstream_mark: Option<u32>,
}

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

/// What the kernel told us about a connection.
struct Identity {
    agent: Option<Arc<str>>,
    cgroup_id: u64,
    governing_cgroup_id: u64,
    pid: u32,
    uid: u32,
}

impl Proxy {
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
                        tokio::spawn(async move {
                            proxy.handle(stream, ClientAddr(peer)).await;
                            drop(guard);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&self, client: TcpStream, client_addr: ClientAddr) {
        let mut conn = Conn {
            started: SystemTime::now(),
            clock: Instant::now(),
            client: client_addr,
            identity: None,
            dst: None,
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
        conn.identity = Some(Identity {
            agent,
            cgroup_id: kernel.cgroup_id,
            governing_cgroup_id: kernel.governing_cgroup_id,
            pid: kernel.tgid,
            uid: kernel.uid,
        });
        async {
            let decision = match conn.agent() {
                Some(agent) => self.policy.decide_egress(agent, dst.normalized(), None),
                None => EgressDecision::Refuse {
                    rule: "unknown-agent".into(),
                    reason: format!(
                        "agent id {:#x} has no name (untagged meanwhile)",
                        kernel.agent_id
                    ),
                },
            };
            let rule = match decision {
                EgressDecision::Refuse { rule, reason } => {
                    debug!(%rule, %reason, "egress refused");
                    drop(client);
                    self.finish(&conn, Verdict::RefusedPolicy, &rule, Some(reason), (0, 0));
                    return;
                }
                EgressDecision::Allow { rule } => rule,
            };
            let upstream = match connect_upstream(dst, self.upstream_mark).await {
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
            let bytes = relay::relay(client, upstream).await;
            self.finish(&conn, Verdict::Forwarded, &rule, None, bytes);
        }
        .instrument(span)
        .await
    }

    fn finish(
        &self,
        conn: &Conn,
        verdict: Verdict,
        rule: &str,
        reason: Option<String>,
        (up, down): (u64, u64),
    ) {
        let identity = conn.identity.as_ref();
        let agent = conn.agent();
        self.metrics.record_connection(agent, crate::l7::Protocol::Tcp, verdict);
        self.records.push(ConnectionRecord {
            id: self.records.next_id(),
            start_unix_ms: unix_ms(conn.started),
            agent: agent.map(str::to_owned),
            cgroup_id: identity.map_or(0, |i| i.cgroup_id),
            governing_cgroup_id: identity.map_or(0, |i| i.governing_cgroup_id),
            pid: identity.map_or(0, |i| i.pid),
            uid: identity.map_or(0, |i| i.uid),
            client: Some(conn.client.to_string()),
            original_destination: conn.dst.map(|d| d.to_string()),
            verdict,
            rule: Some(rule.to_owned()),
            reason,
            bytes_to_upstream: up,
            bytes_to_client: down,
            duration_ms: conn.clock.elapsed().as_millis() as u64,
            protocol: None,
            server_name: None,
            call: None,
        });
    }
}

/// One accepted connection, as far as it is known.
struct Conn {
    started: SystemTime,
    clock: Instant,
    client: ClientAddr,
    identity: Option<Identity>,
    dst: Option<OrigDst>,
}

impl Conn {
    fn agent(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.agent.as_deref())
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

    use mesh_common::{agent_id, CgroupTag};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{bpf::maps::MemoryMaps, policy::PolicySet, state::CgroupLayout};

    struct Fixture {
        maps: Arc<MemoryMaps>,
        records: Arc<RecordLog>,
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
        let proxy = Arc::new(Proxy {
            governor,
            orig_dst: maps.clone(),
            policy: Arc::new(policy),
            records: records.clone(),
            metrics: Arc::new(Metrics::new(None)),
            active: ActiveConnections::default(),
            upstream_mark: None,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(proxy.serve(listener, rx));
        Fixture {
            maps,
            records,
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
                addr: addr::ip6_words(ip),
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
}
