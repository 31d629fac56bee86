//! Quarantine: the kernel refuses new connects and drops traffic of a
//! quarantined cgroup, or of every cgroup of a quarantined agent (remembered
//! in `remembered`, so that it outlives the agent's cgroups); in freeze
//! mode the cgroups are frozen too.
use std::{collections::HashMap, path::Path, time::SystemTime};

use mesh_common::{CgroupTag, QUARANTINE_MASK, TAG_AGENT_QUARANTINED, TAG_QUARANTINED};

use super::{
    names::decode_name,
    remembered::{AgentQuarantine, QuarantineMode},
    validate_agent_name, Governor, StateError,
};
use crate::{cgroup, records::unix_ms};

impl Governor {
    /// Sets or clears quarantine, in isolate mode. `target` is a cgroup path
    /// when it contains a `/`, otherwise an agent name (all of that agent's
    /// cgroups, and those tagged for it later). Returns the ids changed.
    pub fn set_quarantine(&self, target: &str, on: bool) -> Result<Vec<u64>, StateError> {
        self.set_quarantine_as(target, on, QuarantineMode::Isolate, "meshctl quarantine")
    }

    /// [`Governor::set_quarantine`] with a mode (freeze also freezes the
    /// cgroups) and the reason remembered with an agent's quarantine.
    /// Releasing lifts every quarantine on what it names and thaws it.
    pub fn set_quarantine_as(
        &self,
        target: &str,
        on: bool,
        mode: QuarantineMode,
        reason: &str,
    ) -> Result<Vec<u64>, StateError> {
        let changed = if target.contains('/') {
            self.quarantine_cgroup(target, on, mode)?
        } else {
            validate_agent_name(target)?;
            // Remembered first, so that a cgroup tagged meanwhile inherits it.
            let (known, mode) = {
                let mut agents = self.quarantine_lock();
                if on {
                    let entry =
                        agents
                            .entry(target.to_owned())
                            .or_insert_with(|| AgentQuarantine {
                                mode,
                                reason: reason.to_owned(),
                                since_unix_ms: unix_ms(SystemTime::now()),
                            });
                    if mode == QuarantineMode::Freeze {
                        entry.mode = mode;
                    }
                    (true, entry.mode)
                } else {
                    (agents.remove(target).is_some(), mode)
                }
            };
            self.save_quarantine_record();
            let changed = self.flag_agent(target, on, mode)?;
            if changed.is_empty() && !known {
                return Err(StateError::UnknownAgent(target.to_owned()));
            }
            changed
        };
        tracing::warn!(
            target,
            quarantined = on,
            ?mode,
            reason,
            cgroups = changed.len(),
            "quarantine changed"
        );
        Ok(changed)
    }

    /// Sets (or clears, with every other quarantine bit) the agent flag on
    /// each of the agent's cgroups; freezes them in freeze mode, thaws them
    /// on release.
    pub(super) fn flag_agent(
        &self,
        agent: &str,
        on: bool,
        mode: QuarantineMode,
    ) -> Result<Vec<u64>, StateError> {
        let mut changed = Vec::new();
        for (id, tag) in self
            .tags()?
            .into_iter()
            .filter(|(_, t)| decode_name(&t.agent_name) == agent)
        {
            let flags = if on {
                tag.flags | TAG_AGENT_QUARANTINED
            } else {
                tag.flags & !QUARANTINE_MASK
            };
            self.maps.put_tag(id, &CgroupTag { flags, ..tag })?;
            changed.push(id);
            if !on || mode == QuarantineMode::Freeze {
                if let Some(path) = cgroup::find_path(&self.layout.attach_cgroup, id) {
                    self.freeze(&path, on);
                }
            }
        }
        Ok(changed)
    }

    fn quarantine_cgroup(
        &self,
        target: &str,
        on: bool,
        mode: QuarantineMode,
    ) -> Result<Vec<u64>, StateError> {
        let tags = self.tags()?;
        let path = self.resolve(target)?;
        let id = cgroup::id_of(&path)?;
        let tag = if let Some(tag) = tags.get(&id) {
            *tag
        } else if on {
            // Governed through an ancestor: quarantine this subtree only,
            // under the governing agent.
            let governing = self
                .governing_tag(&path, &tags)
                .ok_or_else(|| StateError::NotGoverned(path.display().to_string()))?;
            CgroupTag {
                flags: governing.flags & !QUARANTINE_MASK,
                ..governing
            }
        } else {
            return Err(StateError::NotTagged(path.display().to_string()));
        };
        let flags = if on {
            tag.flags | TAG_QUARANTINED
        } else {
            tag.flags & !QUARANTINE_MASK
        };
        self.maps.put_tag(id, &CgroupTag { flags, ..tag })?;
        if !on || mode == QuarantineMode::Freeze {
            self.freeze(&path, on);
        }
        Ok(vec![id])
    }

    fn governing_tag(&self, path: &Path, tags: &HashMap<u64, CgroupTag>) -> Option<CgroupTag> {
        path.ancestors()
            .take_while(|p| p.starts_with(&self.layout.attach_cgroup))
            .find_map(|p| cgroup::id_of(p).ok().and_then(|id| tags.get(&id).copied()))
    }
}
