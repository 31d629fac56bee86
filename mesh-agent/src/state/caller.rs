//! Which agent, if any, governs a process: the admin API asks this of every
//! caller, because a governed process must not be able to untag, release or
//! re-tag itself (it may run as the same user, even root, as an operator).
use std::path::{Path, PathBuf};

use super::{names::decode_name, Governor, StateError};
use crate::cgroup;

impl Governor {
    /// The agent governing process `pid`: the tag of its cgroup or of the
    /// nearest tagged ancestor (what the kernel programs see), None when
    /// none is tagged. Fails when it cannot tell (the process is gone, its
    /// cgroup unreadable): callers refuse then.
    pub fn agent_of_pid(&self, pid: u32) -> Result<Option<String>, StateError> {
        let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|_| StateError::NoSuchProcess(pid))?;
        let rel = unified_path(&proc_cgroup).ok_or(StateError::NoSuchProcess(pid))?;
        let tags = self.maps.tags()?;
        let mut dir: PathBuf = self.layout.cgroup_root.join(rel.trim_start_matches('/'));
        loop {
            // A cgroup removed meanwhile has no id; its ancestors still do.
            if let Ok(id) = cgroup::id_of(&dir) {
                if let Some((_, tag)) = tags.iter().find(|(cg, _)| *cg == id) {
                    return Ok(Some(decode_name(&tag.agent_name)));
                }
            }
            if dir == self.layout.cgroup_root {
                return Ok(None);
            }
            match dir.parent() {
                Some(parent) if parent.starts_with(&self.layout.cgroup_root) => {
                    dir = parent.to_owned()
                }
                _ => return Ok(None),
            }
        }
    }
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text (the `0::` line).
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| p.trim_end())
        .filter(|p| Path::new(p).is_absolute())
}

#[cfg(test)]
mod tests {
    use super::unified_path;

    #[test]
    fn the_unified_line_names_the_cgroup_v2_path() {
        let hybrid = "12:pids:/user.slice\n1:name=systemd:/user.slice/x\n0::/mesh/exec-3\n";
        assert_eq!(unified_path(hybrid), Some("/mesh/exec-3"));
        assert_eq!(unified_path("0::/\n"), Some("/"));
        assert_eq!(unified_path("3:cpu:/a\n"), None);
        assert_eq!(unified_path("0::relative\n"), None);
    }
}
