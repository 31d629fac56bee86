//! Classification for the kernel's fail-closed check: a cgroup below which a
//! selector may match is "watched" (`CLASS_WATCH_CHILDREN`), and each child
//! of a watched cgroup gets an entry once the daemon has seen it. A child
//! with neither a tag nor an entry is refused in the kernel
//! (`mesh-ebpf/src/governance.rs`), so a cgroup made under a watched parent
//! is never ungoverned between its creation and its tag: its connects are
//! refused until the next pass tags it (or, when no selector matches it,
//! lets it through).
use std::collections::{HashMap, HashSet};

use mesh_common::CLASS_WATCH_CHILDREN;

use super::SelectorCandidate;
use crate::{
    policy::path_glob_matches,
    state::{Governor, StateError},
};

/// Whether a strict descendant of `path` (relative, `/`-separated) could
/// match the path glob `pattern`. Errs on the side of yes (`**`): watching
/// too much only delays new cgroups by one pass, watching too little would
/// let one through ungoverned.
pub fn may_match_below(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rest = pattern.as_slice();
    for segment in path {
        match rest.split_first() {
            None => return false,
            Some((&"**", _)) => return true,
            Some((first, tail)) => {
                if !path_glob_matches(first, segment) {
                    return false;
                }
                rest = tail;
            }
        }
    }
    !rest.is_empty()
}

/// The entries the kernel needs now: the attach cgroup when it is watched,
/// and every child of a watched cgroup (watched itself or not). Value: the
/// `CLASS_*` bits and the cgroup's depth (for ordering the writes).
pub fn desired_classes(
    globs: &[&str],
    attach: &SelectorCandidate,
    cgroups: &[SelectorCandidate],
) -> HashMap<u64, (u32, usize)> {
    let watched = |rel: &str| globs.iter().any(|g| may_match_below(g, rel));
    let mut out = HashMap::new();
    if globs.is_empty() {
        return out;
    }
    if watched(&attach.rel_path) {
        out.insert(attach.id, (CLASS_WATCH_CHILDREN, 0));
    }
    let mut parents: HashMap<&str, bool> = HashMap::new();
    for c in cgroups {
        let parent = c.rel_path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let parent_watched = *parents.entry(parent).or_insert_with(|| watched(parent));
        if !parent_watched {
            continue;
        }
        let class = if watched(&c.rel_path) {
            CLASS_WATCH_CHILDREN
        } else {
            0
        };
        out.insert(c.id, (class, c.rel_path.matches('/').count() + 1));
    }
    out
}

impl Governor {
    /// Writes the classifications, except those of `later` (cgroups a
    /// selector is about to tag: an entry before the tag would let them
    /// through), deepest first, so that a cgroup is never watched before its
    /// children are classified; then removes entries no longer wanted.
    pub(super) fn classify_before_tagging(
        &self,
        desired: &HashMap<u64, (u32, usize)>,
        later: &HashSet<u64>,
    ) -> Result<(), StateError> {
        let existing: HashMap<u64, u32> = self.maps.classes()?.into_iter().collect();
        let tagged: HashSet<u64> = self.tags()?.into_keys().collect();
        let mut writes: Vec<(u64, u32, usize)> = desired
            .iter()
            .filter(|(id, (class, _))| !later.contains(id) && existing.get(id) != Some(class))
            .map(|(id, (class, depth))| (*id, *class, *depth))
            .collect();
        writes.sort_unstable_by_key(|(id, _, depth)| (std::cmp::Reverse(*depth), *id));
        for (id, class, _) in writes {
            self.put_class(id, class);
            if !existing.contains_key(&id) && !tagged.contains(&id) {
                // Connects refused while it was unclassified were counted
                // under its own id; it governs nothing, so they go.
                self.maps.delete_counters(id)?;
            }
        }
        for id in existing.keys().filter(|id| !desired.contains_key(id)) {
            self.maps.delete_class(*id)?;
        }
        Ok(())
    }

    /// The entries held back by [`Governor::classify_before_tagging`].
    pub(super) fn classify_after_tagging(
        &self,
        desired: &HashMap<u64, (u32, usize)>,
        later: &HashSet<u64>,
    ) {
        for id in later {
            if let Some((class, _)) = desired.get(id) {
                self.put_class(*id, *class);
            }
        }
    }

    /// A failed write (the map is full) leaves the cgroup unclassified,
    /// which the kernel refuses: fail closed, and said in the log.
    fn put_class(&self, id: u64, class: u32) {
        if let Err(e) = self.maps.put_class(id, class) {
            tracing::warn!(
                cgroup_id = id,
                error = %e,
                "cannot classify a cgroup for the selectors; its connects stay refused"
            );
        }
    }
}
