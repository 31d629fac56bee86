//! Wires the parts together for `mesh-agent run` and `mesh-agent cleanup`:
//! builds them in order, starts the listeners, the kernel-event readers and
//! the periodic jobs, and drains on SIGTERM. What each part does lives in
//! its own module.
use std::sync::{atomic::Ordering, Arc};

use anyhow::{anyhow, Context as _};
use tokio::{signal::unix::SignalKind, sync::watch};
use tracing::{info, warn};

use crate::{
    admin::server::{self as admin_server, Admin},
    bpf::{self, BpfSettings, GovernanceMaps, OrigDstSource},
    budget::{Ledger, SystemClock},
    cgroup,
    config::{
        proxy_worker_count, Config, BUDGET_LEDGER_FILE, DRAIN_TIMEOUT, HEADER_READ_TIMEOUT,
        L7_SNIFF_TIMEOUT, QUARANTINE_RECORD_FILE, RECORD_RING_CAPACITY, SELECTOR_RECORD_FILE,
        SNIFF_TIMEOUT,
    },
    jobs,
    kernel_events::{forward_kernel_logs, RefusedConnects},
    listener::bind_marked,
    metrics::{self, BudgetSource, Metrics},
    names::{Names, SystemResolver},
    policy::PolicyStore,
    policy_watch::{self, apply_kernel_policy, Fingerprint, PolicyReloader},
    privileges::check_privileges,
    proxy::{tls::MeshCa, workers::ProxyWorkers, L7Settings, Proxy, ProxyParts},
    quarantine_triggers::QuarantineTriggers,
    records::RecordLog,
    state::{selectors::apply_policy_selectors, CgroupLayout, Governor},
};

pub async fn run(config: Config) -> anyhow::Result<()> {
    check_privileges()?;
    // Taken before loading, so that a change made meanwhile is reloaded.
    let policy_fingerprint = Fingerprint::of(&config.policy_dir);
    let initial = policy_watch::load_at_start(&config.policy_dir)
        .map_err(|errors| anyhow!("invalid policy:\n{errors}"))?;
    let policies = Arc::new(PolicyStore::new(initial));

    // Listen before attaching: connect4/6 redirect only to the marked
    // listener, so a failed bind stops here and leaves no redirect behind
    // (pinned programs of an earlier run refuse, they never redirect to an
    // unmarked socket).
    let mut listeners = Vec::with_capacity(config.listen.len());
    for addr in &config.listen {
        let listener = bind_marked(*addr).with_context(|| format!("binding listener {addr}"))?;
        info!(%addr, "proxy listening");
        listeners.push(listener);
    }
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
    apply_kernel_policy(&loaded.policy_maps, &policies.snapshot());
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
    let quarantined =
        governor.remember_quarantine_in(config.data_dir.join(QUARANTINE_RECORD_FILE))?;
    if quarantined > 0 {
        info!(agents = quarantined, "agents under quarantine");
    }
    let governor = Arc::new(governor);

    let reloader = Arc::new(
        PolicyReloader::new(
            config.policy_dir.clone(),
            policies.clone(),
            Some(governor.clone()),
            policy_fingerprint,
        )
        .with_kernel_policy(loaded.policy_maps.clone()),
    );
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
    records.observe_with(Arc::new(QuarantineTriggers::new(
        governor.clone(),
        policies.clone(),
    )));
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
            l7_sniff_timeout: L7_SNIFF_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            limits: config.limits,
        },
        mesh_ca,
        names: Arc::new(Names::new(config.hosts.clone(), Arc::new(SystemResolver))),
    }));
    let active = proxy.active.clone();

    let mut tasks = Vec::new();
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
    let admin_listener = admin_server::bind(&config.admin_socket, &config.admin_groups)
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
        groups: config.admin_groups.clone(),
    });
    tasks.push(tokio::spawn(admin_server::serve(
        admin_listener,
        admin,
        shutdown_rx.clone(),
    )));

    let refused = RefusedConnects {
        governor: governor.clone(),
        records: records.clone(),
        metrics: metrics.clone(),
    };
    let events = tokio::spawn(loaded.events.run(move |ev| refused.on_event(ev)));
    let logger = loaded
        .logger
        .map(|logger| tokio::spawn(forward_kernel_logs(logger)));

    // The periodic jobs (crate::jobs).
    let gc = jobs::spawn_tag_gc(governor.clone());
    tasks.push(tokio::spawn(jobs::watch_policy_dir(
        reloader.clone(),
        shutdown_rx.clone(),
    )));
    let rescan = jobs::spawn_selector_rescan(governor.clone(), policies.clone());

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
