//! The daemon's periodic jobs, each on its own interval: the `policy_dir`
//! poll, the selector rescan and the collection of tags of removed cgroups
//! (and of exec cgroups that outlived their command).
//! `crate::daemon` starts them; what each pass does lives with its concern
//! ([`crate::policy_watch`], [`crate::state`]).
use std::{path::Path, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::warn;

use crate::{
    config::{
        POLICY_POLL_INTERVAL, POLICY_SETTLE_MAX_ROUNDS, POLICY_SETTLE_TIME,
        SELECTOR_RESCAN_INTERVAL, TAG_GC_INTERVAL,
    },
    policy::PolicyStore,
    policy_watch::{Fingerprint, PolicyReloader},
    state::{selectors::apply_policy_selectors, Governor},
};

/// Polls the directory until `shutdown`, reloading on every settled change.
pub async fn watch_policy_dir(reloader: Arc<PolicyReloader>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(POLICY_POLL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let dir = reloader.dir().to_owned();
        if !reloader.changed() {
            continue;
        }
        settle(&dir, POLICY_SETTLE_TIME).await;
        let r = reloader.clone();
        // A reload reads files and walks the cgroup tree for selectors.
        let _ = tokio::task::spawn_blocking(move || r.reload("policy_dir changed")).await;
    }
}

/// Waits until two looks at `dir`, `quiet` apart, agree (bounded).
async fn settle(dir: &Path, quiet: Duration) {
    let mut seen = Fingerprint::of(dir);
    for _ in 0..POLICY_SETTLE_MAX_ROUNDS {
        tokio::time::sleep(quiet).await;
        let now = Fingerprint::of(dir);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Every [`TAG_GC_INTERVAL`]: hands back exec cgroups whose last process
/// has exited, and drops the tags of cgroups removed without `untag`,
/// keeping their counters. Runs until aborted.
pub fn spawn_tag_gc(governor: Arc<Governor>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TAG_GC_INTERVAL);
        loop {
            every.tick().await;
            if let Err(e) = governor.reap_exec_cgroups() {
                warn!(error = %e, "handing back exec cgroups whose processes exited");
            }
            if let Err(e) = governor.collect_garbage() {
                warn!(error = %e, "collecting tags of removed cgroups");
            }
        }
    })
}

/// Every [`SELECTOR_RESCAN_INTERVAL`]: one selector pass, so that cgroups
/// created after a reload are found (5.2: governed within about a second of
/// their creation). Runs until aborted.
pub fn spawn_selector_rescan(
    governor: Arc<Governor>,
    policies: Arc<PolicyStore>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SELECTOR_RESCAN_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let governor = governor.clone();
            let policies = policies.clone();
            let _ =
                tokio::task::spawn_blocking(move || apply_policy_selectors(&governor, &policies))
                    .await;
        }
    })
}
