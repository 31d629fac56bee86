//! Who may do what over the admin API: two roles by Unix group, decided
//! from the socket's peer credentials (uid, gid, and the supplementary
//! groups the kernel captured at connect with `SO_PEERGROUPS`).
//!
//! - viewers: every read-only request (status, audit, budget show, policy
//!   explain);
//! - operators: everything, including the requests that change what is
//!   governed or how (tag, untag, quarantine, release, reload, exec).
//!
//! root (uid 0) is an operator: it can write the BPF maps and `cgroup.procs`
//! itself, so refusing it here would protect nothing. A governed process is
//! refused before roles are looked at, whatever its uid
//! (`server.rs::Admin::refuse_governed_caller`).
use std::os::fd::AsRawFd;

use hyper::Method;

use super::api;
use crate::unix_names::group_id;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// The role a request needs: read-only requests need a viewer, every
    /// other request (and any path not known here) an operator.
    pub fn needed_for(method: &Method, path: &str) -> Role {
        match (method, path) {
            (&Method::GET, api::STATUS | api::RECORDS | api::BUDGETS)
            | (&Method::POST, api::POLICY_EXPLAIN) => Role::Viewer,
            _ => Role::Operator,
        }
    }
}

/// The groups that hold the roles (`admin_viewers_group`,
/// `admin_operators_group` in the config), by name; resolved at each
/// request, so that a group created after the daemon started counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminGroups {
    pub viewers: String,
    pub operators: String,
}

/// The peer of one admin connection, as the kernel gave it.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// Reads the peer's credentials; a caller whose credentials cannot be
    /// read gets uid `u32::MAX` and no groups (no role).
    pub fn of(stream: &tokio::net::UnixStream) -> Caller {
        let cred = stream.peer_cred().ok();
        Caller {
            uid: cred.map_or(u32::MAX, |c| c.uid()),
            gid: cred.map_or(u32::MAX, |c| c.gid()),
            pid: cred
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok()),
            groups: peer_groups(stream.as_raw_fd()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "SO_PEERGROUPS failed; the caller's supplementary groups are not counted");
                Vec::new()
            }),
        }
    }

    fn in_group(&self, gid: Option<u32>) -> bool {
        gid.is_some_and(|g| self.gid == g || self.groups.contains(&g))
    }
}

impl AdminGroups {
    /// The caller's role, None when it has neither.
    pub fn role_of(&self, caller: &Caller) -> Option<Role> {
        if caller.uid == 0 || caller.in_group(group_id(&self.operators)) {
            Some(Role::Operator)
        } else if caller.in_group(group_id(&self.viewers)) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Ok when the caller holds `need` (operators hold the viewer role too),
    /// else the refusal, naming the role and group it lacks.
    pub fn authorize(&self, caller: &Caller, need: Role, what: &str) -> Result<(), String> {
        let has = self.role_of(caller);
        if has >= Some(need) {
            return Ok(());
        }
        let group = match need {
            Role::Viewer => format!("group {} (or {})", self.viewers, self.operators),
            Role::Operator => format!("group {}", self.operators),
        };
        let held = match has {
            Some(role) => format!("has only the {} role", role.as_str()),
            None => "has no admin role".to_owned(),
        };
        Err(format!(
            "refused: {what} needs the {} role (membership in {group}); the caller (uid {}) {held}",
            need.as_str(),
            caller.uid
        ))
    }

    /// The group the socket file belongs to: viewers when that group
    /// exists (operators must be members too, to reach the socket), else
    /// operators, else none (root only).
    pub fn socket_group(&self) -> Option<(u32, &str)> {
        [&self.viewers, &self.operators]
            .into_iter()
            .find_map(|name| group_id(name).map(|gid| (gid, name.as_str())))
    }
}

/// The peer's supplementary groups as captured at connect
/// (`SO_PEERGROUPS`, Linux 4.13): no race with the peer changing them or
/// its pid being reused, as reading /proc/PID/status would have.
fn peer_groups(fd: i32) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: groups is valid for len bytes; len is updated by the kernel.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: len now says how much is needed (NGROUPS_MAX bounds it).
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65_536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_requests_need_a_viewer_and_the_rest_an_operator() {
        for (m, p) in [
            (Method::GET, api::STATUS),
            (Method::GET, api::RECORDS),
            (Method::GET, api::BUDGETS),
            (Method::POST, api::POLICY_EXPLAIN),
        ] {
            assert_eq!(Role::needed_for(&m, p), Role::Viewer, "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, api::TAG),
            (Method::POST, api::UNTAG),
            (Method::POST, api::QUARANTINE),
            (Method::POST, api::RELEASE),
            (Method::POST, api::POLICY_RELOAD),
            (Method::POST, api::EXEC),
            (Method::POST, api::EXEC_ATTACH),
            (Method::POST, api::EXEC_DONE),
            (Method::POST, api::STATUS),
            (Method::GET, "/v1/unknown"),
        ] {
            assert_eq!(Role::needed_for(&m, p), Role::Operator, "{m} {p}");
        }
    }

    #[test]
    fn root_is_an_operator_and_a_stranger_is_told_what_it_lacks() {
        let groups = AdminGroups {
            viewers: "mesh-no-such-viewers-group".into(),
            operators: "mesh-no-such-operators-group".into(),
        };
        let root = Caller {
            uid: 0,
            ..Caller::default()
        };
        assert_eq!(groups.role_of(&root), Some(Role::Operator));
        let stranger = Caller {
            uid: 4242,
            gid: 4242,
            pid: None,
            groups: vec![4243],
        };
        assert_eq!(groups.role_of(&stranger), None);
        let refused = groups.authorize(&stranger, Role::Viewer, "status");
        assert_eq!(
            refused,
            Err(
                "refused: status needs the viewer role (membership in group \
                 mesh-no-such-viewers-group (or mesh-no-such-operators-group)); \
                 the caller (uid 4242) has no admin role"
                    .into()
            )
        );
    }
}
