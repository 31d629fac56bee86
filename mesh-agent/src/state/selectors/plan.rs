//! The selector plan: which cgroups the selectors should govern, and how
//! that differs from the tags they made before. Pure: no maps, no files.
use std::collections::HashMap;

use crate::policy::path_glob_matches;

/// One cgroup as the selector planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorCandidate {
    /// Relative to the cgroup root, `/`-separated, no leading `/`.
    pub rel_path: String,
    pub id: u64,
}

/// What [`plan_selector_tags`] wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorAction {
    Tag {
        id: u64,
        rel_path: String,
        agent: String,
    },
    /// A selector-made tag whose selector now names another agent.
    Retag {
        id: u64,
        rel_path: String,
        from: String,
        to: String,
    },
    /// A selector-made tag no selector asks for any more.
    Untag {
        id: u64,
        rel_path: String,
        agent: String,
    },
    /// A selector-made tag that is gone (cgroup removed, or the tag changed
    /// or removed by someone else): stop tracking it, touch nothing.
    Forget { id: u64 },
}

/// Decides, from scratch, which cgroups the selectors should govern and how
/// that differs from the tags the selectors made before.
///
/// - `selectors`: `(agent, glob)`; when several match one cgroup, the first
///   in this order wins (the caller passes them sorted by agent name).
/// - `attach`: the attach cgroup (never tagged by a selector, but an explicit
///   tag on it covers everything below).
/// - `cgroups`: every cgroup below `attach`.
/// - `tagged`: every tag in force now, cgroup id -> agent.
/// - `made`: the tags selectors made, cgroup id -> agent.
///
/// Explicit tags win: a cgroup tagged by anyone but a selector, or below such
/// a cgroup, is never tagged, retagged or untagged here. A cgroup below one
/// that a selector governs for the same agent is not tagged again (its
/// ancestor's tag already governs it).
pub fn plan_selector_tags(
    selectors: &[(String, String)],
    attach: &SelectorCandidate,
    cgroups: &[SelectorCandidate],
    tagged: &HashMap<u64, String>,
    made: &HashMap<u64, String>,
) -> Vec<SelectorAction> {
    let explicit = |id: u64| match (tagged.get(&id), made.get(&id)) {
        (Some(now), Some(by_selector)) => now != by_selector,
        (Some(_), None) => true,
        (None, _) => false,
    };
    // Parents before children, so an ancestor's outcome is known first.
    let mut ordered: Vec<&SelectorCandidate> = cgroups.iter().collect();
    ordered.sort_by(|a, b| {
        let depth = |c: &SelectorCandidate| c.rel_path.matches('/').count();
        depth(a)
            .cmp(&depth(b))
            .then_with(|| a.rel_path.cmp(&b.rel_path))
    });
    /// Per path: covered by an explicit tag, or governed by a selector's agent.
    enum Cover<'a> {
        Explicit,
        Agent(&'a str),
    }
    let mut covers: HashMap<&str, Cover> = HashMap::new();
    if explicit(attach.id) {
        covers.insert(attach.rel_path.as_str(), Cover::Explicit);
    }
    let mut desired: HashMap<u64, (&str, &str)> = HashMap::new();
    for cgroup in ordered {
        let path = cgroup.rel_path.as_str();
        // The nearest ancestor that has a cover decides.
        let inherited = std::iter::successors(path.rsplit_once('/').map(|(p, _)| p), |p| {
            p.rsplit_once('/').map(|(parent, _)| parent)
        })
        .chain(std::iter::once(attach.rel_path.as_str()))
        .find_map(|ancestor| covers.get(ancestor));
        if matches!(inherited, Some(Cover::Explicit)) || explicit(cgroup.id) {
            covers.insert(path, Cover::Explicit);
            continue;
        }
        let Some((agent, _)) = selectors
            .iter()
            .find(|(_, glob)| path_glob_matches(glob, path))
        else {
            continue;
        };
        if matches!(inherited, Some(Cover::Agent(a)) if *a == agent.as_str()) {
            continue;
        }
        covers.insert(path, Cover::Agent(agent));
        desired.insert(cgroup.id, (path, agent));
    }
    let paths: HashMap<u64, &str> = cgroups
        .iter()
        .map(|c| (c.id, c.rel_path.as_str()))
        .collect();
    let mut actions = Vec::new();
    let mut made_ids: Vec<u64> = made.keys().copied().collect();
    made_ids.sort_unstable();
    for id in made_ids {
        let agent = &made[&id];
        let still_ours = tagged.get(&id) == Some(agent);
        match (paths.get(&id), still_ours, desired.get(&id)) {
            (Some(_), true, Some((_, want))) if *want == agent.as_str() => {}
            (Some(path), true, Some((_, want))) => actions.push(SelectorAction::Retag {
                id,
                rel_path: (*path).to_owned(),
                from: agent.clone(),
                to: (*want).to_owned(),
            }),
            (Some(path), true, None) => actions.push(SelectorAction::Untag {
                id,
                rel_path: (*path).to_owned(),
                agent: agent.clone(),
            }),
            _ => actions.push(SelectorAction::Forget { id }),
        }
    }
    let mut new: Vec<(u64, &str, &str)> = desired
        .iter()
        .filter(|(id, _)| !made.contains_key(id))
        .map(|(id, (path, agent))| (*id, *path, *agent))
        .collect();
    new.sort_unstable_by_key(|(id, _, _)| *id);
    for (id, path, agent) in new {
        actions.push(SelectorAction::Tag {
            id,
            rel_path: path.to_owned(),
            agent: agent.to_owned(),
        });
    }
    actions
}
