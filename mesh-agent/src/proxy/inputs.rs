//! The proxy's inputs: what the daemon hands it ([`ProxyParts`], with its
//! [`L7Settings`]) and the state its connections share beyond that
//! ([`ActiveConnections`], counted for draining on shutdown).
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{limits::Limits, tls::MeshCa};
use crate::{
    bpf::OrigDstSource,
    budget::Ledger,
    config::{HEADER_READ_TIMEOUT, L7_SNIFF_TIMEOUT, SNIFF_TIMEOUT},
    metrics::Metrics,
    policy::PolicyStore,
    records::RecordLog,
    state::Governor,
};

/// L7 settings.
#[derive(Clone, Debug)]
pub struct L7Settings {
    /// Largest request body buffered for inspection.
    pub body_limit: usize,
    /// How long to wait for a client's first bytes.
    pub sniff_timeout: Duration,
    /// The same, when the destination is governed above TCP (such a
    /// connection is refused, never relayed as opaque, after it).
    pub l7_sniff_timeout: Duration,
    /// How long a request's head may take.
    pub header_read_timeout: Duration,
    /// Per-agent bounds.
    pub limits: Limits,
}

impl Default for L7Settings {
    fn default() -> Self {
        L7Settings {
            body_limit: crate::config::DEFAULT_MAX_BODY_BYTES,
            sniff_timeout: SNIFF_TIMEOUT,
            l7_sniff_timeout: L7_SNIFF_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            limits: Limits::default(),
        }
    }
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

/// The parts of a [`Proxy`](super::Proxy) that are not shared state.
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
    /// Binds server names to addresses.
    pub names: Arc<crate::names::Names>,
}
