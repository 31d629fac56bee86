//! Wires the parts together for `mesh-agent run`. Holds no logic of its own.
use std::sync::{atomic::Ordering, Arc};

use anyhow::{bail, Context as _};
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::watch};
use tracing::{info, warn};

use crate::{
    addr::OrigDst,
    admin::server::{self as admin_server, Admin},
    bpf::{self, BpfSettings, GovernanceMaps, OrigDstSource},
    budget::{Ledger, SystemClock},
    cgroup,
    config::{
        Config, BUDGET_LEDGER_FILE, DRAIN_TIMEOUT, RECORD_RING_CAPACITY, SELECTOR_RECORD_FILE,
        SELECTOR_RESCAN_INTERVAL, SNIFF_TIMEOUT, TAG_GC_INTERVAL,
    },
    metrics::{self, BudgetSource, Metrics},
    policy::{PolicySet, PolicyStore},
    policy_watch::{self, Fingerprint, PolicyReloader},
    proxy::{tls::MeshCa, workers::ProxyWorkers, L7Settings, Proxy, ProxyParts},
    records::{unix_ms, ConnectionRecord, Identity, RecordLog, Verdict},
    state::{selectors::apply_policy_selectors, CgroupLayout, Governor},
};

/// Linux capability numbers (linux/capability.h).
const REQUIRED_CAPABILITIES: [(u32, &str, &str); 3] = [
    (39, "CAP_BPF", "load the kernel programs and use their maps"),
    (
        12,
        "CAP_NET_ADMIN",
        "attach cgroup socket programs and mark upstream sockets",
    ),
    (
        21,
        "CAP_SYS_ADMIN",
        "mount bpffs, pin objects and manage cgroups",
    ),
];

/// Names the capabilities the daemon lacks, from /proc/self/status.
pub fn check_privileges() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    let missing: Vec<String> = REQUIRED_CAPABILITIES
        .iter()
        .filter(|(bit, _, _)| cap_eff & (1u64 << bit) == 0)
        .map(|(_, name, why)| format!("{name} (to {why})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "mesh-agent is missing capabilities: {}; run it as root or grant them (see deploy/mesh-agent.service)",
            missing.join(", ")
        );
    }
    Ok(())
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    check_privileges()?;
    // Taken before loading, so that a change made meanwhile is reloaded.
    let policy_fingerprint = Fingerprint::of(&config.policy_dir);
    let policies = Arc::new(PolicyStore::new(load_policy(&config)?));

    for dir in [&config.attach_cgroup, &config.parent_cgroup] {
        cgroup::create(dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    }
    let loaded = bpf::load(&BpfSettings {
        bpffs_dir: &config.bpffs_dir,
        cgroup_root: &config.cgroup_root,
        attach_cgroup: &config.attach_cgroup,
        listen: &config.listen,
    })
    .context("setting up the kernel programs")?;
    let maps = loaded.maps.clone();
    let mut governor = Governor::new(
        maps.clone() as Arc<dyn GovernanceMaps>,
        CgroupLayout {
            cgroup_root: config.cgroup_root.clone(),
            attach_cgroup: config.attach_cgroup.clone(),
            parent_cgroup: config.parent_cgroup.clone(),
        },
    )?;
    let adopted = governor.remember_selector_tags_in(config.data_dir.join(SELECTOR_RECORD_FILE))?;
    if adopted > 0 {
        info!(
            tags = adopted,
            "selector tags of the previous run taken over"
        );
    }
    let governor = Arc::new(governor);

    let reloader = Arc::new(PolicyReloader::new(
        config.policy_dir.clone(),
        policies.clone(),
        Some(governor.clone()),
        policy_fingerprint,
    ));
    // Selectors of the policy loaded at start, before the first connect.
    apply_policy_selectors(&governor, &policies);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Budget spend survives restarts (kill -9 included) in data_dir.
    let ledger_path = config.data_dir.join(BUDGET_LEDGER_FILE);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let ledger = Arc::new(
        Ledger::open(&ledger_path, Arc::new(SystemClock))
            .with_context(|| format!("opening the budget ledger {}", ledger_path.display()))?,
    );
    let metrics = Arc::new(Metrics::new(
        Some(governor.clone()),
        Some(BudgetSource {
            policies: policies.clone(),
            ledger: ledger.clone(),
        }),
    ));
    let records = Arc::new(RecordLog::new(RECORD_RING_CAPACITY));
    // The CA for `tls: terminate`; without it those connections are refused
    // (and say why), everything else still works.
    let mesh_ca = match MeshCa::load_or_create(&config.data_dir) {
        Ok(ca) => Some(Arc::new(ca)),
        Err(e) => {
            warn!(error = %e, "mesh CA unavailable: tls terminate will refuse connections");
            None
        }
    };
    let proxy = Arc::new(Proxy::new(ProxyParts {
        governor: governor.clone(),
        orig_dst: maps.clone() as Arc<dyn OrigDstSource>,
        policies: policies.clone(),
        records: records.clone(),
        metrics: metrics.clone(),
        ledger: ledger.clone(),
        upstream_mark: Some(mesh_common::MESH_SOCKET_MARK),
        l7: L7Settings {
            body_limit: config.max_body_bytes,
            sniff_timeout: SNIFF_TIMEOUT,
        },
        mesh_ca,
    }));
    let active = proxy.active.clone();

    let mut tasks = Vec::new();
    let mut listeners = Vec::with_capacity(config.listen.len());
    for addr in &config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding listener {addr}"))?;
        info!(%addr, "proxy listening");
        listeners.push(
            listener
                .into_std()
                .with_context(|| format!("listener {addr}"))?,
        );
    }
    let worker_count = proxy_worker_count();
    let workers = ProxyWorkers::start(
        proxy.clone(),
        &listeners,
        worker_count,
        shutdown_rx.clone(),
        DRAIN_TIMEOUT,
    )
    .context("starting proxy workers")?;
    // The workers hold their own descriptors of the listening sockets.
    drop(listeners);
    info!(workers = worker_count, "proxy workers started");
    let metrics_listener = metrics::bind(config.metrics)
        .await
        .with_context(|| format!("binding metrics {}", config.metrics))?;
    info!(addr = %config.metrics, "metrics listening");
    tasks.push(tokio::spawn(metrics::serve(
        metrics_listener,
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    let admin_listener = admin_server::bind(&config.admin_socket)
        .with_context(|| format!("binding admin socket {}", config.admin_socket.display()))?;
    info!(socket = %config.admin_socket.display(), "admin API listening");
    let admin = Arc::new(Admin {
        governor: governor.clone(),
        records: records.clone(),
        policies: policies.clone(),
        reloader: reloader.clone(),
        listen: config.listen.iter().map(|a| a.to_string()).collect(),
        active: active.clone(),
        ledger: ledger.clone(),
    });
    tasks.push(tokio::spawn(admin_server::serve(
        admin_listener,
        admin,
        shutdown_rx.clone(),
    )));

    let event_governor = governor.clone();
    let event_records = records.clone();
    let event_metrics = metrics.clone();
    let events = tokio::spawn(loaded.events.run(move |ev| {
        let agent = event_governor.agent_name(ev.dst.agent_id);
        let reason = match ev.verdict {
            mesh_common::verdict::REFUSED_QUARANTINE => {
                "quarantined: connect refused in the kernel"
            }
            mesh_common::verdict::REFUSED_NO_LISTENER => "no mesh listener for this address family",
            mesh_common::verdict::RECORD_FAILED => "could not record the original destination",
            _ => "refused in the kernel",
        };
        event_metrics.record_connection(
            agent.as_deref(),
            crate::l7::Protocol::Tcp,
            Verdict::RefusedKernel,
        );
        let identity = Identity::from_kernel(&ev.dst, agent);
        event_records.push(ConnectionRecord {
            original_destination: Some(OrigDst::from_kernel(&ev.dst.addr, ev.dst.port).to_string()),
            reason: Some(reason.into()),
            ..ConnectionRecord::new(
                event_records.next_id(),
                unix_ms(std::time::SystemTime::now()),
                Some(&identity),
                Verdict::RefusedKernel,
                "kernel".into(),
            )
        });
    }));
    let logger = loaded.logger.map(|logger| {
        tokio::spawn(async move {
            // SAFETY: the logger owns its ring buffer fd for as long as the
            // AsyncFd holds it.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
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
        })
    });

    let gc_governor = governor.clone();
    let gc = tokio::spawn(async move {
        let mut every = tokio::time::interval(TAG_GC_INTERVAL);
        loop {
            every.tick().await;
            if let Err(e) = gc_governor.collect_garbage() {
                warn!(error = %e, "collecting tags of removed cgroups");
            }
        }
    });

    tasks.push(tokio::spawn(policy_watch::watch(
        reloader.clone(),
        shutdown_rx.clone(),
    )));
    // Cgroups created after a reload are found by this rescan (5.2: governed
    // within about a second of their creation).
    let rescan_governor = governor.clone();
    let rescan_policies = policies.clone();
    let rescan = tokio::spawn(async move {
        let mut every = tokio::time::interval(SELECTOR_RESCAN_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let governor = rescan_governor.clone();
            let policies = rescan_policies.clone();
            let _ =
                tokio::task::spawn_blocking(move || apply_policy_selectors(&governor, &policies))
                    .await;
        }
    });

    metrics.ready.store(true, Ordering::Release);
    info!("mesh-agent ready");

    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = int.recv() => info!("SIGINT: draining"),
    }
    metrics.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // The workers close their listeners (new governed connects are refused:
    // fail closed) and return once their connections in flight finish or
    // the drain timeout passes.
    let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    // Settlements still queued are committed before the process ends.
    ledger.close();
    if active.count() > 0 {
        warn!(
            remaining = active.count(),
            "drain timeout; closing remaining connections"
        );
    }
    events.abort();
    gc.abort();
    rescan.abort();
    if let Some(l) = logger {
        l.abort();
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    info!("stopped; kernel state stays pinned (governed connects are refused until restart)");
    Ok(())
}

fn load_policy(config: &Config) -> anyhow::Result<PolicySet> {
    if !config.policy_dir.exists() {
        warn!(
            policy_dir = %config.policy_dir.display(),
            "policy directory missing: every governed agent is denied all egress"
        );
        return Ok(PolicySet::empty());
    }
    match PolicySet::load_dir(&config.policy_dir) {
        Ok(p) => {
            info!(agents = p.agents().count(), dir = %config.policy_dir.display(), "policies loaded");
            Ok(p)
        }
        Err(errors) => bail!("invalid policy:\n{errors}"),
    }
}

/// Proxy worker threads: `MESH_PROXY_WORKERS` (a tuning knob for
/// measurement, docs/benchmarks.md), else one per CPU.
fn proxy_worker_count() -> usize {
    std::env::var("MESH_PROXY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `mesh-agent cleanup`: detach and unpin everything (uninstall).
pub fn cleanup(config: &Config) -> anyhow::Result<()> {
    check_privileges()?;
    bpf::cleanup(&config.bpffs_dir).context("removing pinned state")?;
    // The cgroups `run` created, when empty; never the cgroup root. A cgroup
    // that still holds processes stays (they are no longer governed).
    for dir in [&config.parent_cgroup, &config.attach_cgroup] {
        if dir == &config.cgroup_root || !dir.starts_with(&config.cgroup_root) {
            continue;
        }
        if let Err(e) = cgroup::remove(dir) {
            warn!(cgroup = %dir.display(), error = %e, "left in place");
        }
    }
    Ok(())
}
