//! Quarantine: the kernel refuses new connects and drops traffic of a
//! quarantined cgroup, or of every cgroup of a quarantined agent.
use std::{collections::HashMap, path::Path};

use mesh_common::{CgroupTag, QUARANTINE_MASK, TAG_AGENT_QUARANTINED, TAG_QUARANTINED};

use super::{names::decode_name, validate_agent_name, Governor, StateError};
use crate::cgroup;

impl Governor {
    /// Sets or clears quarantine. `target` is a cgroup path when it contains a
    /// `/`, otherwise an agent name (all of that agent's cgroups). Returns the
    /// ids changed.
    pub fn set_quarantine(&self, target: &str, on: bool) -> Result<Vec<u64>, StateError> {
        let tags = self.tags()?;
        let mut changed = Vec::new();
        let by_agent = !target.contains('/');
        let mut apply = |id: u64, tag: &CgroupTag| -> Result<(), StateError> {
            let flags = match (on, by_agent) {
                (true, true) => tag.flags | TAG_AGENT_QUARANTINED,
                (true, false) => tag.flags | TAG_QUARANTINED,
                // Release lifts every quarantine on what it names.
                (false, _) => tag.flags & !QUARANTINE_MASK,
            };
            self.maps.put_tag(id, &CgroupTag { flags, ..*tag })?;
            changed.push(id);
            Ok(())
        };
        if !by_agent {
            let path = self.resolve(target)?;
            let id = cgroup::id_of(&path)?;
            if let Some(tag) = tags.get(&id) {
                apply(id, tag)?;
            } else if on {
                // Governed through an ancestor: quarantine this subtree only,
                // under the governing agent.
                let governing = self
                    .governing_tag(&path, &tags)
                    .ok_or_else(|| StateError::NotGoverned(path.display().to_string()))?;
                apply(
                    id,
                    &CgroupTag {
                        flags: governing.flags & !QUARANTINE_MASK,
                        ..governing
                    },
                )?;
            } else {
                return Err(StateError::NotTagged(path.display().to_string()));
            }
        } else {
            validate_agent_name(target)?;
            for (id, tag) in tags
                .iter()
                .filter(|(_, t)| decode_name(&t.agent_name) == target)
            {
                apply(*id, tag)?;
            }
            if changed.is_empty() {
                return Err(StateError::UnknownAgent(target.to_owned()));
            }
        }
        tracing::warn!(
            target,
            quarantined = on,
            cgroups = changed.len(),
            "quarantine changed"
        );
        Ok(changed)
    }

    fn governing_tag(&self, path: &Path, tags: &HashMap<u64, CgroupTag>) -> Option<CgroupTag> {
        path.ancestors()
            .take_while(|p| p.starts_with(&self.layout.attach_cgroup))
            .find_map(|p| cgroup::id_of(p).ok().and_then(|id| tags.get(&id).copied()))
    }
}
