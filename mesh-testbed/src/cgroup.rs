//! cgroup v2 helpers: where it is mounted, running a command inside a
//! cgroup, and removing a tree of cgroups a run made.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// One line of /proc/self/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub dir: PathBuf,
    pub fstype: String,
}

/// The mount table, from /proc/self/mounts.
pub fn mounts() -> io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| io::Error::new(e.kind(), format!("read /proc/self/mounts: {e}")))?;
    Ok(parse_mounts(&text))
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let dir = fields.next()?;
            let fstype = fields.next()?;
            Some(Mount {
                device: device.to_owned(),
                dir: PathBuf::from(unescape_mount(dir)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// /proc/self/mounts escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount point (e.g. `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid hosts), read from /proc/self/mounts.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    mounts()?
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.dir)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem is mounted (see /proc/self/mounts); mesh needs cgroup v2",
            )
        })
}

/// True if a bpf filesystem is mounted at `dir`.
pub fn bpffs_mounted_at(dir: &Path) -> io::Result<bool> {
    Ok(mounts()?.iter().any(|m| m.fstype == "bpf" && m.dir == dir))
}

/// Kills what is left in a cgroup tree a run made (cgroup.kill) and
/// removes it, deepest first.
pub fn remove_cgroup_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        for _ in 0..100 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `cmd` (program and arguments), placed in `cgroup` between fork and exec,
/// so that its first instruction already runs there (for cgroups tagged by
/// hand, without `meshctl exec`). Stdin is /dev/null.
pub fn command_in_cgroup(cgroup: &Path, cmd: &[&str]) -> Command {
    let procs = CString::new(cgroup.join("cgroup.procs").to_string_lossy().as_bytes())
        .expect("cgroup path without NUL");
    let mut c = Command::new(cmd[0]);
    c.args(&cmd[1..]).stdin(Stdio::null());
    // SAFETY: open/write/close only between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mount_fields() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/trail\\"), "/trail\\");
        assert_eq!(unescape_mount("/x\\04"), "/x\\04");
    }
}
