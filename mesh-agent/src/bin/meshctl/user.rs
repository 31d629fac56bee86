//! `meshctl exec --user NAME`: the agent runs as another user. The gate
//! drops to it after the daemon moved it into the governed cgroup and just
//! before it becomes CMD, so CMD starts governed and unprivileged.
use std::ffi::CString;

pub(crate) use mesh_agent::unix_names::User;

/// Looks `name` up through NSS.
pub(crate) fn lookup(name: &str) -> Result<User, String> {
    mesh_agent::unix_names::user(name).ok_or_else(|| format!("no such user {name:?}"))
}

/// Whether this process may become `user` (root, or already that user).
pub(crate) fn may_become(user: &User) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 || euid == user.uid {
        Ok(())
    } else {
        Err(format!(
            "running an agent as user {} needs root (meshctl runs as uid {euid})",
            user.name
        ))
    }
}

/// Becomes `user` for good: its supplementary groups, then its gid, then
/// its uid (the order that leaves no privilege behind). Checked
/// afterwards: a partial switch is an error.
pub(crate) fn become_user(user: &User) -> Result<(), String> {
    let cname = CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
    let fail = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if libc::initgroups(cname.as_ptr(), user.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setgid(user.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(user.uid) != 0 {
            return Err(fail("setuid"));
        }
        if libc::getuid() != user.uid || libc::geteuid() != user.uid || libc::getegid() != user.gid
        {
            return Err("the user switch did not take".into());
        }
    }
    Ok(())
}
