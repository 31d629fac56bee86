//! Policy selectors (`match: {cgroup: GLOB}`, ARCHITECTURE.md 5.2): the
//! cgroups below the attach cgroup whose path matches a policy's glob are
//! tagged as its agent. The glob is the policy's
//! ([`crate::policy::path_glob_matches`]); `plan` decides, the pass here
//! applies the plan through the maps, and `record` keeps what selectors
//! made across restarts. The passes run after each reload and on the
//! rescan job (`crate::jobs`).
mod classify;
mod plan;
mod record;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use tracing::{info, warn};

pub use classify::{desired_classes, may_match_below};
pub use plan::{plan_selector_tags, SelectorAction, SelectorCandidate};

use super::{names::decode_name, Governor, StateError};
use crate::{cgroup, policy::PolicyStore};

/// What one selector pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SelectorChanges {
    pub tagged: usize,
    pub retagged: usize,
    pub untagged: usize,
}

impl SelectorChanges {
    pub fn is_empty(&self) -> bool {
        self.tagged + self.retagged + self.untagged == 0
    }
}

impl Governor {
    /// Makes the tags of the selectors (`(agent, glob)`, from
    /// [`crate::policy::PolicySet::cgroup_selectors`]) match the cgroups below
    /// the attach cgroup now: tags new matches, retags or untags what
    /// selectors tagged before and no longer ask for, and leaves explicit
    /// tags alone. A cgroup that cannot be tagged (it vanished meanwhile, an
    /// agent id collision) is logged and skipped; the next pass retries.
    ///
    /// `selectors` is called once the pass holds the selector lock, so that a
    /// pass that read the selectors of an older policy can never finish after
    /// (and undo) the pass of a newer one.
    pub fn apply_selectors(
        &self,
        selectors: impl FnOnce() -> Vec<(String, String)>,
    ) -> Result<SelectorChanges, StateError> {
        let mut made = self.selector_made.lock().unwrap_or_else(|p| p.into_inner());
        let mut selectors = selectors();
        if selectors.is_empty() && made.is_empty() && self.maps.classes()?.is_empty() {
            // Nothing to match and nothing to undo: skip the tree walk.
            return Ok(SelectorChanges::default());
        }
        selectors.sort();
        let tagged: HashMap<u64, String> = self
            .tags()?
            .into_iter()
            .map(|(id, tag)| (id, decode_name(&tag.agent_name)))
            .collect();
        let root = &self.layout.cgroup_root;
        let relative = |p: &Path| -> Option<String> {
            let rel = p.strip_prefix(root).ok()?;
            Some(rel.to_str()?.trim_start_matches('/').to_owned())
        };
        let attach = SelectorCandidate {
            rel_path: relative(&self.layout.attach_cgroup).unwrap_or_default(),
            id: cgroup::id_of(&self.layout.attach_cgroup)?,
        };
        let cgroups: Vec<SelectorCandidate> = cgroup::descendants(&self.layout.attach_cgroup)
            .into_iter()
            .filter_map(|(path, id)| {
                Some(SelectorCandidate {
                    rel_path: relative(&path)?,
                    id,
                })
            })
            .collect();
        let plan = plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &made);
        let globs: Vec<&str> = selectors.iter().map(|(_, g)| g.as_str()).collect();
        let classes = desired_classes(&globs, &attach, &cgroups);
        // Classified after their tag, never before (see `classify`).
        let later: HashSet<u64> = plan
            .iter()
            .filter_map(|a| match a {
                SelectorAction::Tag { id, .. } | SelectorAction::Retag { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        self.classify_before_tagging(&classes, &later)?;
        if plan.is_empty() {
            return Ok(SelectorChanges::default());
        }
        let mut changes = SelectorChanges::default();
        let full = |rel: &str| root.join(rel);
        for action in plan {
            match action {
                SelectorAction::Forget { id } => {
                    made.remove(&id);
                }
                SelectorAction::Tag {
                    id,
                    rel_path,
                    agent,
                } => match self.tag_id(&full(&rel_path), id, &agent) {
                    Ok(()) => {
                        made.insert(id, agent);
                        changes.tagged += 1;
                    }
                    Err(e) => {
                        tracing::warn!(cgroup = %rel_path, agent, error = %e, "selector could not tag")
                    }
                },
                SelectorAction::Untag {
                    id,
                    rel_path,
                    agent,
                } => {
                    let tag = self.maps.tags()?.into_iter().find(|(i, _)| *i == id);
                    if let Some((_, tag)) = tag {
                        self.retire(id, &tag)?;
                        tracing::info!(cgroup = %rel_path, agent, cgroup_id = id, "selector untagged");
                        changes.untagged += 1;
                    }
                    made.remove(&id);
                }
                SelectorAction::Retag {
                    id,
                    rel_path,
                    from,
                    to,
                } => {
                    made.remove(&id);
                    // In place: the cgroup is governed by one agent or the
                    // other at every moment, never by none.
                    match self.retag_id(&full(&rel_path), id, &to) {
                        Ok(()) => {
                            made.insert(id, to);
                            changes.retagged += 1;
                        }
                        Err(e) => {
                            tracing::warn!(cgroup = %rel_path, from, to, error = %e, "selector could not retag")
                        }
                    }
                }
            }
        }
        self.classify_after_tagging(&classes, &later);
        self.save_selector_record(&made);
        Ok(changes)
    }

    /// Whether a selector (not an operator) tagged cgroup `id`.
    pub fn is_selector_tag(&self, id: u64) -> bool {
        self.selector_made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }
}

/// One selector pass with the selectors of the policy in force; changes and
/// errors are logged (the next pass retries).
pub fn apply_policy_selectors(governor: &Governor, store: &PolicyStore) {
    match governor.apply_selectors(|| store.snapshot().cgroup_selectors()) {
        Ok(changes) if !changes.is_empty() => info!(
            tagged = changes.tagged,
            retagged = changes.retagged,
            untagged = changes.untagged,
            "policy selectors applied"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "applying policy selectors"),
    }
}
