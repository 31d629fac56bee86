//! Agents and governed cgroups: tagging, quarantine and the status view, over
//! the kernel's maps (the source of truth, which survives daemon restarts).
//!
//! [`Governor`] is defined here with its name index; its operations live one
//! concern per file: `tagging` (tag, untag, collecting tags of removed
//! cgroups), `quarantine` (with `remembered`, the per-agent record), `exec` (the cgroups of `meshctl exec`), `caller`
//! (which agent governs a process),
//! `status` (the operators' view) and [`selectors`] (tags made by policy
//! `match: {cgroup: GLOB}`).
mod caller;
mod error;
mod exec;
mod names;
mod quarantine;
mod remembered;
pub mod selectors;
mod status;
mod tagging;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc, Mutex, RwLock},
};

use mesh_common::{CgroupCounters, CgroupTag};

pub use error::StateError;
pub use names::validate_agent_name;
pub use remembered::{AgentQuarantine, QuarantineMode};
pub use selectors::{plan_selector_tags, SelectorAction, SelectorCandidate, SelectorChanges};
pub use status::{AgentStatus, CgroupStatus, Counters};

use crate::{bpf::GovernanceMaps, cgroup};
use names::decode_name;

/// Where cgroups live.
#[derive(Clone, Debug)]
pub struct CgroupLayout {
    pub cgroup_root: PathBuf,
    pub attach_cgroup: PathBuf,
    pub parent_cgroup: PathBuf,
}

pub struct Governor {
    maps: Arc<dyn GovernanceMaps>,
    layout: CgroupLayout,
    /// agent id -> name, for the proxy's hot path.
    names: RwLock<HashMap<u32, Arc<str>>>,
    /// Counters of cgroups untagged while this daemon ran, per agent, so that
    /// per-agent totals do not go backwards when `meshctl exec` ends.
    retired: Mutex<HashMap<String, CgroupCounters>>,
    exec_seq: AtomicU64,
    /// Exec cgroups handed back while processes remained in them (cgroup id
    /// -> path): still tagged, removed once empty. Not kept across restarts:
    /// such a cgroup then stays tagged (governed) until an operator untags it.
    lingering_exec: Mutex<HashMap<u64, PathBuf>>,
    /// Tags made by policy selectors (cgroup id -> agent), so that a reload
    /// that drops or changes a selector undoes exactly those. Its lock also
    /// serialises selector passes with explicit tag/untag, so that neither
    /// overwrites the other. Kept in `selector_record` too, so that a
    /// restarted daemon still tells them from explicit tags.
    selector_made: Mutex<HashMap<u64, String>>,
    selector_record: Option<PathBuf>,
    /// Agents under quarantine (see `remembered`), kept in
    /// `quarantine_record` when set.
    quarantined_agents: Mutex<BTreeMap<String, AgentQuarantine>>,
    quarantine_record: Option<PathBuf>,
}

impl Governor {
    /// Rebuilds the name index from the pinned tags (a restart keeps them).
    pub fn new(
        maps: Arc<dyn GovernanceMaps>,
        layout: CgroupLayout,
    ) -> Result<Governor, StateError> {
        let mut names = HashMap::new();
        for (_, tag) in maps.tags()? {
            names.insert(tag.agent_id, Arc::from(decode_name(&tag.agent_name)));
        }
        Ok(Governor {
            maps,
            layout,
            names: RwLock::new(names),
            retired: Mutex::new(HashMap::new()),
            exec_seq: AtomicU64::new(0),
            lingering_exec: Mutex::new(HashMap::new()),
            selector_made: Mutex::new(HashMap::new()),
            selector_record: None,
            quarantined_agents: Mutex::new(BTreeMap::new()),
            quarantine_record: None,
        })
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The agent's name for an id recorded by the kernel.
    pub fn agent_name(&self, id: u32) -> Option<Arc<str>> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn resolve(&self, given: &str) -> Result<PathBuf, StateError> {
        Ok(cgroup::resolve(
            &self.layout.cgroup_root,
            &self.layout.attach_cgroup,
            given,
        )?)
    }

    fn tags(&self) -> Result<HashMap<u64, CgroupTag>, StateError> {
        Ok(self.maps.tags()?.into_iter().collect())
    }
}
