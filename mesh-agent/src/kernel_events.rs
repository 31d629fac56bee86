//! What the kernel tells the daemon outside of accepted connections: the
//! connects it refused or could not record (`MESH_EVENTS`), which become
//! metrics and connection records, and the eBPF programs' own log lines.
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
    /// One connect the kernel refused or could not record.
    pub fn on_event(&self, ev: ConnectEvent) {
        let agent = self.governor.agent_name(ev.dst.agent_id);
        let reason = match (ev.verdict, &agent) {
            // No agent yet: a new cgroup under a watched one, refused until
            // the selectors classify it.
            (verdict::REFUSED_QUARANTINE, None) => {
                "unclassified: a new cgroup is refused until the policy selectors classify it"
            }
            _ => refusal_reason(ev.verdict),
        };
        self.metrics
            .record_connection(agent.as_deref(), Protocol::Tcp, Verdict::RefusedKernel);
        let identity = Identity::from_kernel(&ev.dst, agent);
        self.records.push(refused_connect_record(
            self.records.next_id(),
            &ev,
            &identity,
            reason,
        ));
    }
}

/// Why the kernel refused a connect, from its event's verdict.
pub fn refusal_reason(kernel_verdict: u32) -> &'static str {
    match kernel_verdict {
        verdict::REFUSED_QUARANTINE => "quarantined: connect refused in the kernel",
        verdict::REFUSED_NO_LISTENER => "no mesh listener for this address family",
        verdict::RECORD_FAILED => "could not record the original destination",
        _ => "refused in the kernel",
    }
}

/// The connection record of a connect refused in the kernel, stamped now.
pub fn refused_connect_record(
    id: u64,
    ev: &ConnectEvent,
    identity: &Identity,
    reason: &str,
) -> ConnectionRecord {
    ConnectionRecord {
        original_destination: Some(OrigDst::from_kernel(&ev.dst.addr, ev.dst.port).to_string()),
        reason: Some(reason.into()),
        ..ConnectionRecord::new(
            id,
            unix_ms(SystemTime::now()),
            Some(identity),
            Verdict::RefusedKernel,
            "kernel".into(),
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
