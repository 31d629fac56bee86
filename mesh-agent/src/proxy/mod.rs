//! The transparent proxy: accept redirected connections, recover the
//! original destination and identity from the kernel, sniff what the agent
//! speaks, and either relay bytes (opaque TCP, TLS passthrough) or serve
//! HTTP and decide every call in it ([`http`]).
//!
//! Read top-down along the data path: `inputs.rs` (what the proxy is given
//! and what its connections share), [`Proxy::serve`] here (the accept loop),
//! `accept.rs` (kernel record → identity → sniff → dispatch), then one path
//! per kind of traffic: `opaque.rs` (opaque TCP, TLS passthrough, relayed by
//! [`relay`]), `terminate.rs` (TLS the mesh terminates with [`tls`]) and
//! `serve_http.rs` (hyper on the agent's connection, each request handed to
//! [`http`], upstream on [`pool`]). `conn.rs` is a connection's identity,
//! its record, and the dial to its destination.
mod accept;
pub(crate) mod conn;
mod inputs;
mod limits;
mod opaque;
mod serve_http;
mod terminate;
mod vouch;

pub mod body;
pub mod http;
pub mod io;
pub mod pool;
pub mod relay;
pub mod sniff;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use tokio::{net::TcpListener, sync::watch};
use tracing::warn;

pub use self::{
    accept::RULE_L7_UNREADABLE,
    conn::{Conn, MarkedSockets, SocketFactory},
    inputs::{ActiveConnections, ActiveGuard, L7Settings, ProxyParts},
    limits::{AgentLimits, Limits},
    terminate::RULE_TLS_UNREAD,
    vouch::RULE_NAME_UNBOUND,
};
use self::{http::Sessions, pool::UpstreamPool, terminate::UpstreamTlsConfigs, tls::MeshCa};
use crate::{
    addr::ClientAddr, bpf::OrigDstSource, budget::Ledger, config::ACCEPT_ERROR_BACKOFF,
    metrics::Metrics, names::Names, policy::PolicyStore, records::RecordLog, state::Governor,
};

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
    /// Makes the sockets upstream connections are dialled from: marked with
    /// `MESH_SOCKET_MARK` in the daemon; unmarked only in unprivileged tests,
    /// where setting a mark is not permitted.
    pub sockets: Arc<dyn SocketFactory>,
    pub l7: L7Settings,
    pub pool: UpstreamPool,
    pub sessions: Arc<Sessions>,
    /// The CA that signs leaves for `tls: terminate` (None: terminate is
    /// unavailable and such connections are refused).
    pub mesh_ca: Option<Arc<MeshCa>>,
    /// Upstream TLS client configs by (extra CA file, HTTP/2 offered).
    upstream_tls: UpstreamTlsConfigs,
    /// What each agent holds open, against its bounds.
    pub limits: Arc<AgentLimits>,
    /// Whether a server name resolves to the address connected to.
    pub names: Arc<Names>,
}

impl Proxy {
    /// A proxy whose upstream sockets carry `p.upstream_mark`.
    pub fn new(p: ProxyParts) -> Proxy {
        let sockets = Arc::new(MarkedSockets {
            mark: p.upstream_mark,
        });
        Proxy::with_sockets(p, sockets)
    }

    /// A proxy dialling upstream from the sockets `sockets` makes
    /// (`p.upstream_mark` is then unused).
    pub fn with_sockets(p: ProxyParts, sockets: Arc<dyn SocketFactory>) -> Proxy {
        Proxy {
            governor: p.governor,
            orig_dst: p.orig_dst,
            policies: p.policies,
            records: p.records,
            metrics: p.metrics,
            ledger: p.ledger,
            active: ActiveConnections::default(),
            pool: UpstreamPool::new(sockets.clone()),
            sockets,
            sessions: Arc::new(Sessions::default()),
            mesh_ca: p.mesh_ca,
            upstream_tls: UpstreamTlsConfigs::default(),
            limits: Arc::new(AgentLimits::new(p.l7.limits)),
            names: p.names,
            l7: p.l7,
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
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
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
}

#[cfg(test)]
mod tests;
