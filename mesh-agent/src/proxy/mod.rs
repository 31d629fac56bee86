//! The transparent L4 proxy: accept redirected connections, recover the
//! original destination and identity from the kernel, decide egress, and carry
//! bytes both ways to where the agent meant to go.
pub mod addr;
pub mod relay;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tracing::{Instrument as _, debug, info_span, warn};

use self::addr::{ClientAddr, OrigDst};
use crate::{
    bpf::OrigDstSource,
    config::UPSTREAM_CONNECT_TIMEOUT,
    metrics::Metrics,
    policy::{EgressDecision, EgressPolicy},
    records::{ConnectionRecord, RecordLog, Verdict, unix_ms},
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
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
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
        let started = SystemTime::now();
        let clock = Instant::now();
        let Some(kernel) = self.orig_dst.take(&client_addr.peer_key()) else {
            // Not redirected by our programs (a direct connection to the
            // listener): never dial anything for it.
            self.finish(
                started,
                clock,
                None,
                &client_addr,
                None,
                Verdict::NoOriginalDestination,
                Some("no-original-destination"),
                Some("the kernel recorded no original destination for this connection".into()),
                (0, 0),
            );
            return;
        };
        let dst = OrigDst::from_kernel(&kernel.addr, kernel.port);
        let identity = Identity {
            agent: self.governor.agent_name(kernel.agent_id),
            cgroup_id: kernel.cgroup_id,
            governing_cgroup_id: kernel.governing_cgroup_id,
            pid: kernel.tgid,
            uid: kernel.uid,
        };
        let span = info_span!(
            "conn",
            agent = identity.agent.as_deref().unwrap_or("-"),
            cgroup_id = identity.cgroup_id,
            pid = identity.pid,
            dst = %dst,
        );
        async {
            let decision = match identity.agent.as_deref() {
                Some(agent) => self.policy.decide_egress(agent, dst.normalized(), None),
                None => EgressDecision::Refuse {
                    rule: "unknown-agent".into(),
                    reason: format!("agent id {:#x} has no name (untagged meanwhile)", kernel.agent_id),
                },
            };
            let rule = match decision {
                EgressDecision::Refuse { rule, reason } => {
                    debug!(%rule, %reason, "egress refused");
                    drop(client);
                    self.finish(
                        started,
                        clock,
                        Some(&identity),
                        &client_addr,
                        Some(dst),
                        Verdict::RefusedPolicy,
                        Some(rule.as_ref()),
                        Some(reason),
                        (0, 0),
                    );
                    return;
                }
                EgressDecision::Allow { rule } => rule,
            };
            let upstream = match connect_upstream(dst).await {
                Ok(upstream) => upstream,
                Err(e) => {
                    // Reset, so the agent sees a failed connection as it would
                    // have without the mesh.
                    let _ = client.set_zero_linger();
                    drop(client);
                    self.finish(
                        started,
                        clock,
                        Some(&identity),
                        &client_addr,
                        Some(dst),
                        Verdict::UpstreamFailed,
                        Some(rule.as_ref()),
                        Some(e.to_string()),
                        (0, 0),
                    );
                    return;
                }
            };
            let bytes = relay::relay(client, upstream).await;
            self.finish(
                started,
                clock,
                Some(&identity),
                &client_addr,
                Some(dst),
                Verdict::Forwarded,
                Some(rule.as_ref()),
                None,
                bytes,
            );
        }
        .instrument(span)
        .await
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        started: SystemTime,
        clock: Instant,
        identity: Option<&Identity>,
        client: &ClientAddr,
        dst: Option<OrigDst>,
        verdict: Verdict,
        rule: Option<&str>,
        reason: Option<String>,
        (up, down): (u64, u64),
    ) {
        let agent = identity.and_then(|i| i.agent.as_deref());
        self.metrics.record_connection(agent, verdict);
        self.records.push(ConnectionRecord {
            id: self.records.next_id(),
            start_unix_ms: unix_ms(started),
            agent: agent.map(str::to_owned),
            cgroup_id: identity.map_or(0, |i| i.cgroup_id),
            governing_cgroup_id: identity.map_or(0, |i| i.governing_cgroup_id),
            pid: identity.map_or(0, |i| i.pid),
            uid: identity.map_or(0, |i| i.uid),
            client: Some(client.to_string()),
            original_destination: dst.map(|d| d.to_string()),
            verdict,
            rule: rule.map(str::to_owned),
            reason,
            bytes_to_upstream: up,
            bytes_to_client: down,
            duration_ms: clock.elapsed().as_millis() as u64,
        });
    }
}

/// Dials the original destination from a socket marked as the mesh's own, so
/// the connect programs never redirect it (the second guard after not living
/// in a governed cgroup).
async fn connect_upstream(dst: OrigDst) -> std::io::Result<TcpStream> {
    let target: SocketAddr = dst.0;
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    set_mark(&socket, mesh_common::MESH_SOCKET_MARK)?;
    socket.set_nodelay(true)?;
    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream connect timed out")),
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
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
