//! Users and groups by name and id, through NSS (the `get*_r` calls), for
//! the admin API's roles and `meshctl exec --user`.
use std::ffi::{CStr, CString};

/// A user as the password database has it.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Runs a `get*_r` lookup with a buffer grown on ERANGE (bounded); `call`
/// gets the buffer and returns the call's code and whether it found one.
fn with_buffer<T>(mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> Option<T> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match call(&mut buf) {
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            (0, found) => return found,
            _ => return None,
        }
    }
}

/// A group's id by name.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: an all-zero `group` is a valid out-parameter.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is given.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(group.gr_gid))
    })
}

/// A group's name by id, for messages.
pub fn group_name(gid: u32) -> Option<String> {
    with_buffer(|buf| {
        // SAFETY: as in `group_id`.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is given.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        // SAFETY: on success gr_name points at a NUL-terminated string in buf.
        let name = (rc == 0 && !result.is_null()).then(|| {
            unsafe { CStr::from_ptr(group.gr_name) }
                .to_string_lossy()
                .into_owned()
        });
        (rc, name)
    })
}

/// A user by name.
pub fn user(name: &str) -> Option<User> {
    let cname = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: an all-zero `passwd` is a valid out-parameter.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is given.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        let found = (rc == 0 && !result.is_null()).then(|| User {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            // SAFETY: on success pw_dir points at a NUL-terminated string in buf.
            home: unsafe { CStr::from_ptr(pw.pw_dir) }
                .to_string_lossy()
                .into_owned(),
        });
        (rc, found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_id() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(user("root").map(|u| (u.uid, u.gid)), Some((0, 0)));
        assert_eq!(group_id("mesh-no-such-group"), None);
        assert!(user("mesh-no-such-user").is_none());
    }
}
