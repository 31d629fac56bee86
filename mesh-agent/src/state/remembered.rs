//! Quarantine remembered per agent, in `data_dir`: an agent stays
//! quarantined with no live cgroup, and every cgroup tagged for it later (a
//! new `meshctl exec`, a selector match, after a daemon restart) starts
//! quarantined. The kernel's tag flags stay the enforcement; this record is
//! what new tags inherit from.
use std::{collections::BTreeMap, path::PathBuf};

use mesh_common::TAG_AGENT_QUARANTINED;
use serde::{Deserialize, Serialize};

use super::{names::decode_name, Governor, StateError};
use crate::cgroup;

/// How a quarantined agent is stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineMode {
    /// Its connects are refused and its packets dropped, in the kernel.
    #[default]
    Isolate,
    /// Isolated, and its processes frozen (`cgroup.freeze`).
    Freeze,
}

impl From<crate::policy::QuarantineMode> for QuarantineMode {
    fn from(m: crate::policy::QuarantineMode) -> Self {
        match m {
            crate::policy::QuarantineMode::Isolate => QuarantineMode::Isolate,
            crate::policy::QuarantineMode::Freeze => QuarantineMode::Freeze,
        }
    }
}

/// One remembered quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentQuarantine {
    pub mode: QuarantineMode,
    /// Who or what quarantined it, and why.
    pub reason: String,
    pub since_unix_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QuarantineRecord {
    agents: BTreeMap<String, AgentQuarantine>,
}

impl Governor {
    /// Keeps the quarantined agents in `path` (in `data_dir`), loading those
    /// of a previous run, and makes the kernel agree: every cgroup of a
    /// remembered agent gets the agent's quarantine flag (and is frozen in
    /// freeze mode), and an agent flagged in the kernel's maps is
    /// remembered. An unreadable file is logged and read as empty; the
    /// kernel's flags still hold. Returns how many agents are quarantined.
    pub fn remember_quarantine_in(&mut self, path: PathBuf) -> Result<usize, StateError> {
        let mut record: QuarantineRecord = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable quarantine record");
                QuarantineRecord::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QuarantineRecord::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable quarantine record");
                QuarantineRecord::default()
            }
        };
        for (_, tag) in self.tags()? {
            if tag.flags & TAG_AGENT_QUARANTINED != 0 {
                record
                    .agents
                    .entry(decode_name(&tag.agent_name))
                    .or_insert_with(|| AgentQuarantine {
                        mode: QuarantineMode::Isolate,
                        reason: "found quarantined in the kernel's maps".into(),
                        since_unix_ms: crate::records::unix_ms(std::time::SystemTime::now()),
                    });
            }
        }
        self.quarantine_record = Some(path);
        let agents: Vec<(String, QuarantineMode)> = record
            .agents
            .iter()
            .map(|(a, q)| (a.clone(), q.mode))
            .collect();
        *self
            .quarantined_agents
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) = record.agents;
        for (agent, mode) in &agents {
            self.flag_agent(agent, true, *mode)?;
        }
        self.save_quarantine_record();
        Ok(agents.len())
    }

    /// The agent's remembered quarantine, if it is quarantined.
    pub fn agent_quarantine(&self, agent: &str) -> Option<AgentQuarantine> {
        self.quarantine_lock().get(agent).cloned()
    }

    pub(super) fn quarantine_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, AgentQuarantine>> {
        self.quarantined_agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the record (write aside, rename); a failure is logged: the
    /// quarantine itself is in the kernel's maps.
    pub(super) fn save_quarantine_record(&self) {
        let Some(path) = &self.quarantine_record else {
            return;
        };
        let record = QuarantineRecord {
            agents: self.quarantine_lock().clone(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let aside = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
            std::fs::write(&aside, bytes)?;
            std::fs::rename(&aside, path)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %path.display(), error = %e, "saving the quarantine record");
        }
    }

    /// Freezes or thaws a cgroup; a failure is logged (the kernel's
    /// quarantine flag still isolates it).
    pub(super) fn freeze(&self, path: &std::path::Path, frozen: bool) {
        if let Err(e) = cgroup::set_frozen(path, frozen) {
            tracing::warn!(cgroup = %path.display(), frozen, error = %e, "cgroup.freeze failed");
        }
    }
}
