//! The cgroups of `meshctl exec`: made fresh and tagged, the caller's child
//! moved in by the daemon, removed and only then untagged when the command
//! ends. A process that outlives the command (`setsid`, a double fork) keeps
//! its cgroup, and the cgroup keeps its tag: the survivor stays governed
//! until it exits and the tag collector removes the cgroup.
use std::{collections::HashMap, path::PathBuf, sync::atomic::Ordering};

use super::{validate_agent_name, Governor, QuarantineMode, StateError};
use crate::cgroup;

impl Governor {
    /// Creates a fresh cgroup for `meshctl exec` and tags it.
    /// An agent quarantined in freeze mode is refused: its command would
    /// start frozen and `meshctl exec` would never return.
    pub fn create_exec_cgroup(&self, agent: &str) -> Result<PathBuf, StateError> {
        validate_agent_name(agent)?;
        if self
            .agent_quarantine(agent)
            .is_some_and(|q| q.mode == QuarantineMode::Freeze)
        {
            return Err(StateError::Frozen(agent.to_owned()));
        }
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

    /// Hands back a cgroup made by [`Governor::create_exec_cgroup`]: removed,
    /// then untagged. While processes remain in it, it stays tagged (never an
    /// ungoverned moment) and is remembered for [`Governor::reap_exec_cgroups`].
    pub fn finish_exec_cgroup(&self, given: &str) -> Result<(), StateError> {
        let path = cgroup::resolve(&self.layout.cgroup_root, &self.layout.parent_cgroup, given)?;
        let id = cgroup::id_of(&path)?;
        if let Err(e) = cgroup::remove(&path) {
            tracing::info!(
                cgroup = %path.display(),
                error = %e,
                "processes outlive meshctl exec; the cgroup stays governed until they exit"
            );
            self.lingering_lock().insert(id, path);
            return Ok(());
        }
        match self.untag_id(id, &path) {
            Ok(()) | Err(StateError::NotTagged(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes and untags the exec cgroups whose last process has exited.
    /// Returns how many were handed back.
    pub fn reap_exec_cgroups(&self) -> Result<usize, StateError> {
        let lingering: Vec<(u64, PathBuf)> = self
            .lingering_lock()
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        let mut reaped = 0;
        for (id, path) in lingering {
            if cgroup::remove(&path).is_err() {
                continue;
            }
            self.lingering_lock().remove(&id);
            match self.untag_id(id, &path) {
                Ok(()) | Err(StateError::NotTagged(_)) => reaped += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(reaped)
    }

    fn lingering_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PathBuf>> {
        self.lingering_exec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
