//! What the kernel tells the daemon outside of accepted connections: the
//! socket calls it refused or could not record (`MESH_EVENTS`: TCP and UDP
//! connects, UDP sends, sockets of other types, binds), which become
//! connection records (TCP connects also metrics; the others are counted
//! per cgroup in the kernel), and the eBPF programs' own log lines.
use std::{sync::Arc, time::SystemTime};

use mesh_common::{verdict, ConnectEvent};

use crate::{
    addr::OrigDst,
    l7::Protocol,
    metrics::Metrics,
    records::{unix_ms, ConnectionRecord, Identity, RecordLog, Verdict},
    state::Governor,
};

/// Where refused connects go: counted per agent and recorded.
pub struct RefusedConnects {
    pub governor: Arc<Governor>,
    pub records: Arc<RecordLog>,
    pub metrics: Arc<Metrics>,
}

impl RefusedConnects {
    /// One socket call the kernel refused or could not record.
    pub fn on_event(&self, ev: ConnectEvent) {
        let agent = self.governor.agent_name(ev.dst.agent_id);
        let reason = match (ev.verdict, &agent) {
            // No agent yet: a new cgroup under a watched one, refused until
            // the selectors classify it.
            (verdict::REFUSED_QUARANTINE, None) => {
                "unclassified: a new cgroup is refused until the policy selectors classify it"
                    .to_owned()
            }
            // Which socket it was is the whole story of this refusal.
            (verdict::REFUSED_SOCKET, _) => format!(
                "{} (type {}, protocol {})",
                refusal_reason(ev.verdict),
                ev.sock_type,
                ev.protocol
            ),
            (v, _) => refusal_reason(v).to_owned(),
        };
        if u32::from(ev.protocol) == IPPROTO_TCP && !is_bind(ev.verdict) {
            self.metrics
                .record_connection(agent.as_deref(), Protocol::Tcp, Verdict::RefusedKernel);
        }
        let identity = Identity::from_kernel(&ev.dst, agent);
        self.records.push(refused_connect_record(
            self.records.next_id(),
            &ev,
            &identity,
            &reason,
        ));
    }
}

const IPPROTO_TCP: u32 = 6;

fn is_bind(kernel_verdict: u32) -> bool {
    matches!(
        kernel_verdict,
        verdict::REFUSED_BIND | verdict::REFUSED_BIND_LISTEN_PORT
    )
}

/// Why the kernel refused a socket call, from its event's verdict.
pub fn refusal_reason(kernel_verdict: u32) -> &'static str {
    match kernel_verdict {
        verdict::REFUSED_QUARANTINE => "quarantined: refused in the kernel",
        verdict::REFUSED_NO_LISTENER => "no mesh listener for this address family",
        verdict::RECORD_FAILED => "could not record the original destination",
        verdict::REFUSED_LISTENER_UNVERIFIED => {
            "the mesh listener is not there (daemon down, or another socket holds its address): \
             connect refused in the kernel"
        }
        verdict::REFUSED_UDP => "udp: no udp:// egress entry of the agent allows this destination",
        verdict::REFUSED_SOCKET => {
            "socket type refused: governed processes get TCP and UDP sockets only"
        }
        verdict::REFUSED_BIND => {
            "bind refused: a fixed port on a non-loopback address needs ingress.allow"
        }
        verdict::REFUSED_BIND_LISTEN_PORT => "bind refused: the mesh listen port is the daemon's",
        _ => "refused in the kernel",
    }
}

/// The record's rule: what kind of socket call the kernel refused.
pub fn refusal_rule(kernel_verdict: u32) -> &'static str {
    match kernel_verdict {
        verdict::REFUSED_UDP => "kernel.udp",
        verdict::REFUSED_SOCKET => "kernel.socket",
        v if is_bind(v) => "kernel.bind",
        verdict::REFUSED_LISTENER_UNVERIFIED => "kernel.listener",
        _ => "kernel",
    }
}

/// The record of a socket call refused in the kernel, stamped now: its
/// `original_destination` is the destination (connect, send) or the local
/// address (bind).
pub fn refused_connect_record(
    id: u64,
    ev: &ConnectEvent,
    identity: &Identity,
    reason: &str,
) -> ConnectionRecord {
    // A refused socket() has no address yet.
    let address = (ev.verdict != verdict::REFUSED_SOCKET || ev.dst.port != 0)
        .then(|| OrigDst::from_kernel(&ev.dst.addr, ev.dst.port).to_string());
    ConnectionRecord {
        original_destination: address,
        reason: Some(reason.into()),
        ..ConnectionRecord::new(
            id,
            unix_ms(SystemTime::now()),
            Some(identity),
            Verdict::RefusedKernel,
            refusal_rule(ev.verdict).into(),
        )
    }
}

/// Writes the eBPF programs' log lines to the daemon's log as they arrive,
/// until the task is dropped.
pub async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd for as long as the
    // AsyncFd holds it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut fd) = registered else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
