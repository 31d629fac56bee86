//! Tags: which cgroup is governed as which agent. A tag lives in the kernel's
//! maps; untagging keeps the cgroup's counters in its agent's totals.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use mesh_common::{agent_id, CgroupTag, TAG_AGENT_QUARANTINED};

use super::{
    names::{decode_name, encode_name},
    remembered::QuarantineMode,
    validate_agent_name, Governor, StateError,
};
use crate::cgroup;

impl Governor {
    /// Governs the cgroup at `given` (and its subtree) as `agent`.
    pub fn tag(&self, given: &str, agent: &str) -> Result<(PathBuf, u64), StateError> {
        validate_agent_name(agent)?;
        let path = self.resolve(given)?;
        let id = cgroup::id_of(&path)?;
        let mut made = self.selector_made.lock().unwrap_or_else(|p| p.into_inner());
        // An operator's tag wins over a selector's, and from now on the tag
        // is the operator's: selector changes no longer touch it.
        if let Some(by_selector) = made.get(&id) {
            if by_selector != agent {
                if let Some(tag) = self.tags()?.get(&id) {
                    self.retire(id, tag)?;
                }
            }
        }
        self.tag_id(&path, id, agent)?;
        if made.remove(&id).is_some() {
            self.save_selector_record(&made);
        }
        Ok((path, id))
    }

    pub(super) fn tag_id(&self, path: &Path, id: u64, agent: &str) -> Result<(), StateError> {
        self.put_agent_tag(path, id, agent, false)
    }

    /// Tags `id` for `agent` over whatever tag it has (a selector that now
    /// names another agent), in one map write: the cgroup is governed at
    /// every moment. The old agent keeps the counters so far; the new one
    /// does not inherit the old one's quarantine.
    pub(super) fn retag_id(&self, path: &Path, id: u64, agent: &str) -> Result<(), StateError> {
        self.put_agent_tag(path, id, agent, true)
    }

    fn put_agent_tag(
        &self,
        path: &Path,
        id: u64,
        agent: &str,
        replace: bool,
    ) -> Result<(), StateError> {
        let aid = agent_id(agent.as_bytes());
        let tags = self.tags()?;
        let previous = tags.get(&id).copied();
        if let Some(existing) = &previous {
            let name = decode_name(&existing.agent_name);
            if name != agent && !replace {
                return Err(StateError::AlreadyTagged(path.display().to_string(), name));
            }
        }
        for tag in tags.values() {
            let name = decode_name(&tag.agent_name);
            if tag.agent_id == aid && name != agent {
                return Err(StateError::AgentIdCollision {
                    name: agent.to_owned(),
                    other: name,
                });
            }
        }
        // A cgroup tagged for an agent under quarantine is quarantined too,
        // whether the quarantine is remembered or seen on its other cgroups.
        let remembered = self.agent_quarantine(agent);
        let inherited = tags
            .values()
            .filter(|t| t.agent_id == aid)
            .fold(0, |acc, t| acc | (t.flags & TAG_AGENT_QUARANTINED))
            | if remembered.is_some() {
                TAG_AGENT_QUARANTINED
            } else {
                0
            };
        let kept = match &previous {
            Some(t) if t.agent_id == aid => t.flags,
            _ => 0,
        };
        self.maps.put_tag(
            id,
            &CgroupTag {
                agent_id: aid,
                flags: kept | inherited,
                agent_name: encode_name(agent),
            },
        )?;
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(aid, Arc::from(agent));
        if let Some(old) = previous.filter(|t| t.agent_id != aid) {
            let counters = self.maps.counters(id)?;
            self.maps.delete_counters(id)?;
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(decode_name(&old.agent_name))
                .or_default()
                .add(&counters);
        }
        if remembered.is_some_and(|q| q.mode == QuarantineMode::Freeze) {
            self.freeze(path, true);
        }
        tracing::info!(agent, cgroup = %path.display(), cgroup_id = id, "tagged");
        Ok(())
    }

    /// Stops governing the cgroup at `given`.
    pub fn untag(&self, given: &str) -> Result<PathBuf, StateError> {
        let path = self.resolve(given)?;
        let id = cgroup::id_of(&path)?;
        let mut made = self.selector_made.lock().unwrap_or_else(|p| p.into_inner());
        self.untag_id(id, &path)?;
        // A selector that still matches tags it again on its next pass:
        // to stop that, change the policy.
        if made.remove(&id).is_some() {
            self.save_selector_record(&made);
        }
        Ok(path)
    }

    pub(super) fn untag_id(&self, id: u64, path: &Path) -> Result<(), StateError> {
        let tags = self.tags()?;
        let Some(tag) = tags.get(&id) else {
            return Err(StateError::NotTagged(path.display().to_string()));
        };
        let name = self.retire(id, tag)?;
        tracing::info!(agent = %name, cgroup = %path.display(), cgroup_id = id, "untagged");
        Ok(())
    }

    /// Removes a tag and its counters, keeping the counters in the agent's
    /// totals. Returns the agent's name.
    pub(super) fn retire(&self, id: u64, tag: &CgroupTag) -> Result<String, StateError> {
        let name = decode_name(&tag.agent_name);
        let counters = self.maps.counters(id)?;
        self.maps.delete_tag(id)?;
        self.maps.delete_counters(id)?;
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .add(&counters);
        Ok(name)
    }

    /// Untags cgroups that no longer exist (removed without `untag`), keeping
    /// their counters in the agent's totals. Returns how many were dropped.
    pub fn collect_garbage(&self) -> Result<usize, StateError> {
        let tags = self.tags()?;
        if tags.is_empty() {
            return Ok(0);
        }
        let mut alive: std::collections::HashSet<u64> =
            cgroup::descendants(&self.layout.attach_cgroup)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
        if let Ok(id) = cgroup::id_of(&self.layout.attach_cgroup) {
            alive.insert(id);
        }
        let mut dropped = 0;
        for (id, tag) in tags {
            if alive.contains(&id) {
                continue;
            }
            let name = self.retire(id, &tag)?;
            tracing::info!(agent = %name, cgroup_id = id, "untagged a removed cgroup");
            dropped += 1;
        }
        Ok(dropped)
    }
}
