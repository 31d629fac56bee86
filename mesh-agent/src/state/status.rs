//! The status view: agents, their cgroups, kernel counters and quarantine
//! state, with the totals of cgroups untagged since the daemon started.
use std::collections::HashMap;

use mesh_common::CgroupCounters;
use serde::{Deserialize, Serialize};

use super::{names::decode_name, Governor, StateError};
use crate::cgroup;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CgroupStatus {
    pub id: u64,
    pub path: Option<String>,
    pub quarantined: bool,
    pub counters: Counters,
}

/// Kernel counters of a cgroup, summed over CPUs.
pub type Counters = CgroupCounters;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    /// Any of its cgroups quarantined.
    pub quarantined: bool,
    pub cgroups: Vec<CgroupStatus>,
    /// Current cgroups plus cgroups untagged since the daemon started.
    pub totals: Counters,
    /// The agent's own quarantine (it outlives its cgroups), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<super::AgentQuarantine>,
}

impl Governor {
    /// resolves each cgroup id to its path (a filesystem walk: for operators,
    /// not for every metrics scrape).
    pub fn status(&self, with_paths: bool) -> Result<Vec<AgentStatus>, StateError> {
        struct Acc {
            quarantined: bool,
            cgroups: Vec<CgroupStatus>,
            totals: CgroupCounters,
        }
        let mut agents: HashMap<String, Acc> = HashMap::new();
        let new_acc = || Acc {
            quarantined: false,
            cgroups: Vec::new(),
            totals: CgroupCounters::default(),
        };
        for (id, tag) in self.tags()? {
            let counters = self.maps.counters(id)?;
            let entry = agents
                .entry(decode_name(&tag.agent_name))
                .or_insert_with(new_acc);
            entry.quarantined |= tag.quarantined();
            entry.totals.add(&counters);
            entry.cgroups.push(CgroupStatus {
                id,
                path: with_paths
                    .then(|| cgroup::find_path(&self.layout.attach_cgroup, id))
                    .flatten()
                    .map(|p| p.display().to_string()),
                quarantined: tag.quarantined(),
                counters,
            });
        }
        for (name, retired) in self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            agents
                .entry(name.clone())
                .or_insert_with(new_acc)
                .totals
                .add(retired);
        }
        let remembered = self.quarantine_lock().clone();
        for name in remembered.keys() {
            agents.entry(name.clone()).or_insert_with(new_acc);
        }
        let mut out: Vec<AgentStatus> = agents
            .into_iter()
            .map(|(name, mut acc)| {
                acc.cgroups.sort_by_key(|c| c.id);
                let quarantine = remembered.get(&name).cloned();
                AgentStatus {
                    quarantined: acc.quarantined || quarantine.is_some(),
                    name,
                    cgroups: acc.cgroups,
                    totals: acc.totals,
                    quarantine,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
