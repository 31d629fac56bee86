//! Agents and governed cgroups: tagging, quarantine and the status view, over
//! the kernel's maps (the source of truth, which survives daemon restarts).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
};

use mesh_common::{
    agent_id, CgroupCounters, CgroupTag, AGENT_NAME_MAX, QUARANTINE_MASK, TAG_AGENT_QUARANTINED,
    TAG_QUARANTINED,
};
use serde::{Deserialize, Serialize};

use crate::{
    bpf::{BpfError, GovernanceMaps},
    cgroup::{self, CgroupError},
};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid agent name {0:?}: use 1 to 56 characters of A-Z a-z 0-9 . _ -")]
    BadAgentName(String),
    #[error("agent name {name:?} collides with agent {other:?} (same id); choose another name")]
    AgentIdCollision { name: String, other: String },
    #[error("{0} is already governed by agent {1:?}; untag it first")]
    AlreadyTagged(String, String),
    #[error("{0} is not tagged")]
    NotTagged(String),
    #[error("{0} is not governed by any agent")]
    NotGoverned(String),
    #[error("no cgroup is tagged for agent {0:?}")]
    UnknownAgent(String),
    #[error("no process {0}")]
    NoSuchProcess(u32),
    #[error("process {0} is not a child of the caller running as the caller's user")]
    NotYourProcess(u32),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

impl StateError {
    /// Whether the request named something that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StateError::Cgroup(CgroupError::NotFound(_))
                | StateError::NotTagged(_)
                | StateError::NotGoverned(_)
                | StateError::UnknownAgent(_)
                | StateError::NoSuchProcess(_)
        )
    }

    /// Whether the request itself was wrong (as opposed to the daemon failing).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            StateError::Bpf(_) | StateError::Cgroup(CgroupError::Io { .. })
        )
    }
}

pub fn validate_agent_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= AGENT_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadAgentName(name.to_owned()))
    }
}

fn encode_name(name: &str) -> [u8; AGENT_NAME_MAX] {
    let mut out = [0u8; AGENT_NAME_MAX];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn decode_name(raw: &[u8; AGENT_NAME_MAX]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Where cgroups live.
#[derive(Clone, Debug)]
pub struct CgroupLayout {
    pub cgroup_root: PathBuf,
    pub attach_cgroup: PathBuf,
    pub parent_cgroup: PathBuf,
}

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
    /// Tags made by policy selectors (cgroup id -> agent), so that a reload
    /// that drops or changes a selector undoes exactly those. Its lock also
    /// serialises selector passes with explicit tag/untag, so that neither
    /// overwrites the other. Kept in `selector_record` too, so that a
    /// restarted daemon still tells them from explicit tags.
    selector_made: Mutex<HashMap<u64, String>>,
    selector_record: Option<PathBuf>,
}

/// The file form of [`Governor::selector_made`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct SelectorRecord {
    tags: Vec<SelectorRecordEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SelectorRecordEntry {
    cgroup_id: u64,
    agent: String,
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
            selector_made: Mutex::new(HashMap::new()),
            selector_record: None,
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

    fn tag_id(&self, path: &Path, id: u64, agent: &str) -> Result<(), StateError> {
        let aid = agent_id(agent.as_bytes());
        let tags = self.tags()?;
        if let Some(existing) = tags.get(&id) {
            let name = decode_name(&existing.agent_name);
            if name != agent {
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
        // A cgroup tagged for an agent under quarantine is quarantined too.
        let inherited = tags
            .values()
            .filter(|t| t.agent_id == aid)
            .fold(0, |acc, t| acc | (t.flags & TAG_AGENT_QUARANTINED));
        let flags = tags.get(&id).map(|t| t.flags).unwrap_or(0) | inherited;
        self.maps.put_tag(
            id,
            &CgroupTag {
                agent_id: aid,
                flags,
                agent_name: encode_name(agent),
            },
        )?;
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(aid, Arc::from(agent));
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

    fn untag_id(&self, id: u64, path: &Path) -> Result<(), StateError> {
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
    fn retire(&self, id: u64, tag: &CgroupTag) -> Result<String, StateError> {
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

    /// Creates a fresh cgroup for `meshctl exec` and tags it.
    pub fn create_exec_cgroup(&self, agent: &str) -> Result<PathBuf, StateError> {
        validate_agent_name(agent)?;
        let seq = self.exec_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .layout
            .parent_cgroup
            .join(format!("{agent}-{}-{seq}", std::process::id()));
        cgroup::create(&path)?;
        let result = cgroup::id_of(&path)
            .map_err(StateError::from)
            .and_then(|id| self.tag_id(&path, id, agent));
        if let Err(e) = result {
            let _ = cgroup::remove(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Moves `pid` into an exec cgroup on behalf of the caller `(uid, pid)`
    /// from the admin socket's credentials. The daemon does the move because
    /// cgroup v2 lets only a writer of both cgroups' common ancestor migrate a
    /// process; it accepts only the caller's own child, run as the caller.
    pub fn attach_exec_pid(
        &self,
        given: &str,
        pid: u32,
        caller: (u32, Option<u32>),
    ) -> Result<(), StateError> {
        let path = cgroup::resolve(&self.layout.cgroup_root, &self.layout.parent_cgroup, given)?;
        let (caller_uid, caller_pid) = caller;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| StateError::NoSuchProcess(pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let parent_ok = caller_pid.is_some() && field("PPid:") == caller_pid;
        let uid_ok = caller_uid == 0 || field("Uid:") == Some(caller_uid);
        if !parent_ok || !uid_ok {
            return Err(StateError::NotYourProcess(pid));
        }
        cgroup::move_pid(&path, pid)?;
        Ok(())
    }

    /// Untags and removes a cgroup made by [`Governor::create_exec_cgroup`].
    pub fn finish_exec_cgroup(&self, given: &str) -> Result<(), StateError> {
        let path = cgroup::resolve(&self.layout.cgroup_root, &self.layout.parent_cgroup, given)?;
        let id = cgroup::id_of(&path)?;
        match self.untag_id(id, &path) {
            Ok(()) | Err(StateError::NotTagged(_)) => {}
            Err(e) => return Err(e),
        }
        // Leftover descendants (a daemonised grandchild) keep it; say so.
        cgroup::remove(&path)?;
        Ok(())
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

    /// Agents, their cgroups, counters and quarantine state. `with_paths`
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
        let mut out: Vec<AgentStatus> = agents
            .into_iter()
            .map(|(name, mut acc)| {
                acc.cgroups.sort_by_key(|c| c.id);
                AgentStatus {
                    name,
                    quarantined: acc.quarantined,
                    cgroups: acc.cgroups,
                    totals: acc.totals,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Policy selectors (`match: {cgroup: GLOB}`, ARCHITECTURE.md 5.2).
// ---------------------------------------------------------------------------

/// Whether `path` (a cgroup path relative to the cgroup root, `/`-separated,
/// with or without a leading `/`) matches a selector glob: `*` matches any
/// run of characters within one path segment, `?` one character (not `/`),
/// a `**` segment any number of segments (none included); everything else is
/// literal.
pub fn cgroup_glob_matches(glob: &str, path: &str) -> bool {
    let split = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|seg| !seg.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let pattern = split(glob);
    let segments = split(path);
    let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    segments_match(&pattern, &segments)
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments_match(rest, &path[skip..])),
        Some((first, rest)) => path.split_first().is_some_and(|(segment, path_rest)| {
            segment_matches(first.as_bytes(), segment.as_bytes()) && segments_match(rest, path_rest)
        }),
    }
}

/// `*` and `?` within one segment (iterative, backtracking to the last `*`).
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

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
            .find(|(_, glob)| cgroup_glob_matches(glob, path))
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
        if selectors.is_empty() && made.is_empty() {
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
                    let tag = self.maps.tags()?.into_iter().find(|(i, _)| *i == id);
                    if let Some((_, tag)) = tag {
                        // Retire first: the old agent keeps its counters and
                        // the new one does not inherit the old one's quarantine.
                        self.retire(id, &tag)?;
                    }
                    made.remove(&id);
                    match self.tag_id(&full(&rel_path), id, &to) {
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
        self.save_selector_record(&made);
        Ok(changes)
    }

    /// Keeps the list of selector-made tags in `path` (in `data_dir`) and
    /// takes over the tags a previous daemon's selectors made, those still
    /// tagged for the same agent. A missing or unreadable file is an empty
    /// list (its tags then count as explicit: never untagged by a selector).
    /// Returns how many tags were taken over.
    pub fn remember_selector_tags_in(&mut self, path: PathBuf) -> Result<usize, StateError> {
        let record: SelectorRecord = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable selector record");
                SelectorRecord::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SelectorRecord::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable selector record");
                SelectorRecord::default()
            }
        };
        let tags = self.tags()?;
        let made: HashMap<u64, String> = record
            .tags
            .into_iter()
            .filter(|e| {
                tags.get(&e.cgroup_id)
                    .is_some_and(|t| decode_name(&t.agent_name) == e.agent)
            })
            .map(|e| (e.cgroup_id, e.agent))
            .collect();
        let adopted = made.len();
        *self
            .selector_made
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) = made;
        self.selector_record = Some(path);
        Ok(adopted)
    }

    /// Writes the selector-made tags to the record (write aside, rename);
    /// a failure is logged: the tags themselves are in the kernel's maps.
    fn save_selector_record(&self, made: &HashMap<u64, String>) {
        let Some(path) = &self.selector_record else {
            return;
        };
        let mut tags: Vec<SelectorRecordEntry> = made
            .iter()
            .map(|(id, agent)| SelectorRecordEntry {
                cgroup_id: *id,
                agent: agent.clone(),
            })
            .collect();
        tags.sort_by_key(|e| e.cgroup_id);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let aside = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&SelectorRecord { tags })
                .map_err(std::io::Error::other)?;
            std::fs::write(&aside, bytes)?;
            std::fs::rename(&aside, path)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %path.display(), error = %e, "saving the selector record");
        }
    }

    /// Whether a selector (not an operator) tagged cgroup `id`.
    pub fn is_selector_tag(&self, id: u64) -> bool {
        self.selector_made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::maps::MemoryMaps;

    fn governor() -> (tempfile_dir::Dir, Governor, Arc<MemoryMaps>) {
        let dir = tempfile_dir::Dir::new();
        let root = dir.path().to_owned();
        let attach = root.join("attach");
        std::fs::create_dir_all(attach.join("agents")).unwrap();
        let maps = Arc::new(MemoryMaps::default());
        let layout = CgroupLayout {
            cgroup_root: root.clone(),
            attach_cgroup: attach.clone(),
            parent_cgroup: attach.join("agents"),
        };
        let g = Governor::new(maps.clone(), layout).unwrap();
        (dir, g, maps)
    }

    /// A throwaway directory standing in for a cgroup2 mount.
    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("mesh-state-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn tag_quarantine_release_untag() {
        let (dir, g, maps) = governor();
        let cg = dir.path().join("attach/agents/a");
        std::fs::create_dir_all(&cg).unwrap();
        let (path, id) = g.tag(cg.to_str().unwrap(), "support").unwrap();
        assert_eq!(path, cg);
        assert_eq!(
            g.agent_name(agent_id(b"support")).as_deref(),
            Some("support")
        );

        assert_eq!(g.set_quarantine("support", true).unwrap(), vec![id]);
        assert!(maps.tags.lock().unwrap()[&id].quarantined());
        let status = g.status(true).unwrap();
        assert!(status[0].quarantined);

        g.set_quarantine("support", false).unwrap();
        assert!(!maps.tags.lock().unwrap()[&id].quarantined());

        maps.counters.lock().unwrap().insert(
            id,
            CgroupCounters {
                connects: 3,
                ..Default::default()
            },
        );
        g.untag(cg.to_str().unwrap()).unwrap();
        assert!(maps.tags.lock().unwrap().is_empty());
        // Totals survive the untag.
        let status = g.status(true).unwrap();
        assert_eq!(status[0].totals.connects, 3);
        assert!(status[0].cgroups.is_empty());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let (dir, g, _) = governor();
        let missing = dir.path().join("attach/nope");
        let err = g.tag(missing.to_str().unwrap(), "a").unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("attach/nope"), "{err}");
        assert!(matches!(
            g.tag("/attach", "bad name"),
            Err(StateError::BadAgentName(_))
        ));
        assert!(matches!(
            g.set_quarantine("ghost", true),
            Err(StateError::UnknownAgent(_))
        ));
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        assert!(matches!(
            g.tag(outside.to_str().unwrap(), "a"),
            Err(StateError::Cgroup(CgroupError::Outside { .. }))
        ));
    }

    #[test]
    fn retag_by_another_agent_is_refused() {
        let (dir, g, _) = governor();
        let cg = dir.path().join("attach/agents/b");
        std::fs::create_dir_all(&cg).unwrap();
        g.tag(cg.to_str().unwrap(), "one").unwrap();
        assert!(matches!(
            g.tag(cg.to_str().unwrap(), "two"),
            Err(StateError::AlreadyTagged(..))
        ));
        // Same agent again is idempotent.
        g.tag(cg.to_str().unwrap(), "one").unwrap();
    }

    #[test]
    fn child_cgroup_quarantine_inherits_the_agent() {
        let (dir, g, maps) = governor();
        let parent = dir.path().join("attach/agents/p");
        let child = parent.join("child");
        std::fs::create_dir_all(&child).unwrap();
        g.tag(parent.to_str().unwrap(), "parent-agent").unwrap();
        let ids = g.set_quarantine(child.to_str().unwrap(), true).unwrap();
        let tag = maps.tags.lock().unwrap()[&ids[0]];
        assert!(tag.quarantined());
        assert_eq!(tag.agent_id, agent_id(b"parent-agent"));
    }

    #[test]
    fn new_cgroups_of_a_quarantined_agent_are_quarantined() {
        let (dir, g, maps) = governor();
        let first = dir.path().join("attach/agents/q1");
        std::fs::create_dir_all(&first).unwrap();
        g.tag(first.to_str().unwrap(), "loop").unwrap();
        g.set_quarantine("loop", true).unwrap();
        let later = g.create_exec_cgroup("loop").unwrap();
        let id = crate::cgroup::id_of(&later).unwrap();
        assert!(maps.tags.lock().unwrap()[&id].quarantined());
        g.set_quarantine("loop", false).unwrap();
        assert!(!maps.tags.lock().unwrap()[&id].quarantined());
        g.finish_exec_cgroup(later.to_str().unwrap()).unwrap();
        assert!(!later.exists());
    }

    #[test]
    fn tags_of_removed_cgroups_are_collected_and_their_counters_kept() {
        let (dir, g, maps) = governor();
        let gone = dir.path().join("attach/agents/gone");
        let kept = dir.path().join("attach/agents/kept");
        std::fs::create_dir_all(&gone).unwrap();
        std::fs::create_dir_all(&kept).unwrap();
        let (_, gone_id) = g.tag(gone.to_str().unwrap(), "gc").unwrap();
        g.tag(kept.to_str().unwrap(), "gc").unwrap();
        maps.counters.lock().unwrap().insert(
            gone_id,
            CgroupCounters {
                connects: 5,
                ..Default::default()
            },
        );
        std::fs::remove_dir(&gone).unwrap();
        assert_eq!(g.collect_garbage().unwrap(), 1);
        assert_eq!(maps.tags.lock().unwrap().len(), 1);
        let status = g.status(true).unwrap();
        assert_eq!(status[0].cgroups.len(), 1);
        assert_eq!(status[0].totals.connects, 5);
        assert_eq!(g.collect_garbage().unwrap(), 0);
    }

    #[test]
    fn names_are_recovered_from_the_maps() {
        let (dir, g, maps) = governor();
        let cg = dir.path().join("attach/agents/r");
        std::fs::create_dir_all(&cg).unwrap();
        g.tag(cg.to_str().unwrap(), "restart-me").unwrap();
        let again = Governor::new(maps, g.layout().clone()).unwrap();
        assert_eq!(
            again.agent_name(agent_id(b"restart-me")).as_deref(),
            Some("restart-me")
        );
    }

    #[test]
    fn selector_globs_match_within_and_across_segments() {
        let yes = [
            (
                "/system.slice/support-*.service",
                "system.slice/support-1.service",
            ),
            (
                "/system.slice/support-*.service",
                "/system.slice/support-.service",
            ),
            ("/a/**", "a"),
            ("/a/**", "a/b/c"),
            ("/a/**/z", "a/z"),
            ("/a/**/z", "a/b/c/z"),
            ("/**/sel-?", "x/y/sel-1"),
            ("/t/sel-*", "t/sel-abc"),
            ("/t/*", "t/x"),
        ];
        for (glob, path) in yes {
            assert!(
                cgroup_glob_matches(glob, path),
                "{glob} should match {path}"
            );
        }
        let no = [
            (
                "/system.slice/support-*.service",
                "system.slice/x/support-1.service",
            ),
            ("/t/*", "t/x/y"),
            ("/t/*", "t"),
            ("/t/sel-?", "t/sel-12"),
            ("/t/sel-?", "t/sel-"),
            ("/a/**/z", "a/b/zz"),
            ("/t/sel-*", "u/sel-a"),
            ("/t/sel-*", "t/sel"),
        ];
        for (glob, path) in no {
            assert!(
                !cgroup_glob_matches(glob, path),
                "{glob} should not match {path}"
            );
        }
    }

    fn cand(rel_path: &str, id: u64) -> SelectorCandidate {
        SelectorCandidate {
            rel_path: rel_path.to_owned(),
            id,
        }
    }

    fn names(pairs: &[(u64, &str)]) -> HashMap<u64, String> {
        pairs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect()
    }

    #[test]
    fn the_plan_tags_matches_and_leaves_explicit_tags_and_their_subtrees_alone() {
        let selectors = vec![("bot".to_owned(), "/t/sel-*".to_owned())];
        let attach = cand("t", 1);
        let cgroups = [
            cand("t/sel-a", 2),
            cand("t/sel-a/child", 3),
            cand("t/sel-b", 4),
            cand("t/other", 5),
            cand("t/other/sel-c", 6),
            cand("t/sel-explicit", 7),
            cand("t/manual", 8),
        ];
        // sel-explicit is tagged by an operator (as another agent);
        // manual too, and nothing below it is ours to touch.
        let tagged = names(&[(7, "operator"), (8, "operator")]);
        let plan = plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &HashMap::new());
        assert_eq!(
            plan,
            vec![
                SelectorAction::Tag {
                    id: 2,
                    rel_path: "t/sel-a".into(),
                    agent: "bot".into()
                },
                SelectorAction::Tag {
                    id: 4,
                    rel_path: "t/sel-b".into(),
                    agent: "bot".into()
                },
            ]
        );
        // The attach cgroup tagged by hand covers everything.
        let tagged = names(&[(1, "operator")]);
        assert!(
            plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &HashMap::new()).is_empty()
        );
    }

    #[test]
    fn the_plan_undoes_only_what_selectors_made() {
        let attach = cand("t", 1);
        let cgroups = [cand("t/sel-a", 2), cand("t/sel-b", 3), cand("t/sel-c", 4)];
        // 2 and 3 were tagged by the selector; 4 by hand (same agent).
        let tagged = names(&[(2, "bot"), (3, "bot"), (4, "bot"), (9, "bot")]);
        let made = names(&[(2, "bot"), (3, "bot"), (9, "bot")]);
        // The selector now names another agent, and only matches sel-a/sel-c.
        let selectors = vec![
            ("bot2".to_owned(), "/t/sel-a".to_owned()),
            ("bot2".to_owned(), "/t/sel-c".to_owned()),
        ];
        let plan = plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &made);
        assert_eq!(
            plan,
            vec![
                SelectorAction::Retag {
                    id: 2,
                    rel_path: "t/sel-a".into(),
                    from: "bot".into(),
                    to: "bot2".into()
                },
                SelectorAction::Untag {
                    id: 3,
                    rel_path: "t/sel-b".into(),
                    agent: "bot".into()
                },
                // Cgroup 9 is gone: forgotten, not touched.
                SelectorAction::Forget { id: 9 },
            ]
        );
        // No selectors: every tag they made goes, the explicit one stays.
        let plan = plan_selector_tags(&[], &attach, &cgroups, &tagged, &made);
        assert_eq!(
            plan,
            vec![
                SelectorAction::Untag {
                    id: 2,
                    rel_path: "t/sel-a".into(),
                    agent: "bot".into()
                },
                SelectorAction::Untag {
                    id: 3,
                    rel_path: "t/sel-b".into(),
                    agent: "bot".into()
                },
                SelectorAction::Forget { id: 9 },
            ]
        );
        // A selector tag an operator replaced is the operator's now.
        let tagged = names(&[(2, "operator")]);
        let plan = plan_selector_tags(&[], &attach, &cgroups, &tagged, &names(&[(2, "bot")]));
        assert_eq!(plan, vec![SelectorAction::Forget { id: 2 }]);
    }

    #[test]
    fn the_plan_does_not_tag_below_a_cgroup_it_governs_for_the_same_agent() {
        let attach = cand("t", 1);
        let cgroups = [cand("t/a", 2), cand("t/a/b", 3), cand("t/a/b/c", 4)];
        let selectors = vec![
            ("deep".to_owned(), "/t/a/b/c".to_owned()),
            ("outer".to_owned(), "/t/**".to_owned()),
        ];
        let plan = plan_selector_tags(
            &selectors,
            &attach,
            &cgroups,
            &HashMap::new(),
            &HashMap::new(),
        );
        assert_eq!(
            plan,
            vec![
                SelectorAction::Tag {
                    id: 2,
                    rel_path: "t/a".into(),
                    agent: "outer".into()
                },
                SelectorAction::Tag {
                    id: 4,
                    rel_path: "t/a/b/c".into(),
                    agent: "deep".into()
                },
            ]
        );
    }

    #[test]
    fn selectors_tag_retag_and_untag_through_the_maps_and_explicit_tags_win() {
        let (dir, g, maps) = governor();
        let sel_a = dir.path().join("attach/sel-a");
        let sel_b = dir.path().join("attach/sel-b");
        let other = dir.path().join("attach/other");
        for d in [&sel_a, &sel_b, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let id = |p: &Path| crate::cgroup::id_of(p).unwrap();
        let agent_of = |p: &Path| {
            maps.tags
                .lock()
                .unwrap()
                .get(&id(p))
                .map(|t| decode_name(&t.agent_name))
        };
        // sel-b is tagged by hand first.
        g.tag(sel_b.to_str().unwrap(), "operator").unwrap();
        let selectors = vec![("bot".to_owned(), "/attach/sel-*".to_owned())];
        let changes = g.apply_selectors(|| selectors.clone()).unwrap();
        assert_eq!(changes.tagged, 1);
        assert_eq!(agent_of(&sel_a).as_deref(), Some("bot"));
        assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));
        assert_eq!(agent_of(&other), None);
        assert!(g.is_selector_tag(id(&sel_a)));
        // A second pass changes nothing.
        assert!(g.apply_selectors(|| selectors.clone()).unwrap().is_empty());

        // A new matching cgroup is found by the next pass.
        let sel_c = dir.path().join("attach/sel-c");
        std::fs::create_dir_all(&sel_c).unwrap();
        assert_eq!(g.apply_selectors(|| selectors.clone()).unwrap().tagged, 1);
        assert_eq!(agent_of(&sel_c).as_deref(), Some("bot"));

        // The selector changes agent: its tags move, the explicit one stays.
        let renamed = vec![("bot2".to_owned(), "/attach/sel-*".to_owned())];
        assert_eq!(g.apply_selectors(|| renamed.clone()).unwrap().retagged, 2);
        assert_eq!(agent_of(&sel_a).as_deref(), Some("bot2"));
        assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));

        // An operator tags a selector-made cgroup: theirs from now on.
        g.tag(sel_c.to_str().unwrap(), "pinned").unwrap();
        assert_eq!(agent_of(&sel_c).as_deref(), Some("pinned"));
        assert!(!g.is_selector_tag(id(&sel_c)));

        // The selector goes away: only what it made is untagged.
        assert_eq!(g.apply_selectors(Vec::new).unwrap().untagged, 1);
        assert_eq!(agent_of(&sel_a), None);
        assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));
        assert_eq!(agent_of(&sel_c).as_deref(), Some("pinned"));
    }

    #[test]
    fn a_restarted_governor_still_knows_which_tags_selectors_made() {
        let (dir, g, maps) = governor();
        let record = dir.path().join("data/selector-tags.json");
        let layout = g.layout().clone();
        let mut g = g;
        assert_eq!(g.remember_selector_tags_in(record.clone()).unwrap(), 0);
        let sel = dir.path().join("attach/sel-a");
        let hand = dir.path().join("attach/sel-b");
        std::fs::create_dir_all(&sel).unwrap();
        std::fs::create_dir_all(&hand).unwrap();
        g.tag(hand.to_str().unwrap(), "bot").unwrap();
        let selectors = vec![("bot".to_owned(), "/attach/sel-*".to_owned())];
        assert_eq!(g.apply_selectors(|| selectors.clone()).unwrap().tagged, 1);
        assert!(record.exists());

        // A new daemon over the same (pinned) maps.
        drop(g);
        let mut again = Governor::new(maps.clone(), layout).unwrap();
        assert_eq!(again.remember_selector_tags_in(record).unwrap(), 1);
        let id = |p: &Path| crate::cgroup::id_of(p).unwrap();
        assert!(again.is_selector_tag(id(&sel)));
        assert!(!again.is_selector_tag(id(&hand)));
        // The selector is gone after the restart: only its own tag goes.
        assert_eq!(again.apply_selectors(Vec::new).unwrap().untagged, 1);
        let tags = maps.tags.lock().unwrap();
        assert!(!tags.contains_key(&id(&sel)));
        assert!(tags.contains_key(&id(&hand)));
    }
}
