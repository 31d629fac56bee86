//! Small helpers shared by the xtask commands: paths, running commands with
//! the command line echoed, privilege and mount checks.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of xtask's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The cargo binary to use for nested invocations: the one that runs us
/// (`CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

/// Put `$CARGO_HOME/bin` on PATH for this process and its children, so that
/// tools installed by `cargo install` (bpf-linker, oha) are found even when the
/// caller's PATH lacks it (e.g. under sudo).
pub fn ensure_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .expect("PATH entries contain no separator");
    // Single-threaded at this point (called first thing in main).
    std::env::set_var("PATH", joined);
}

/// PATH with `dir` prepended.
pub fn path_with_prefix(dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
        .expect("PATH entries contain no separator")
}

/// A command line rendered for humans (shell-quoted where needed).
pub fn display_cmd(cmd: &Command) -> String {
    let mut out = String::new();
    for env in cmd.get_envs() {
        if let (key, Some(value)) = env {
            if key == "PATH" {
                // PATH is long and noisy; show only that it was changed.
                out.push_str("PATH=… ");
                continue;
            }
            let _ = write!(out, "{}={} ", key.to_string_lossy(), quote(value));
        }
    }
    out.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%^".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run `cmd`, echoing it first (`+ cmd …` on stderr); fail if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = run_status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display_cmd(cmd));
    }
    Ok(())
}

/// Run `cmd`, echoing it first, and return its exit status.
pub fn run_status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", display_cmd(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display_cmd(cmd)))
}

/// Run `cmd` silently (a probe); `None` if it cannot be started.
pub fn probe(cmd: &mut Command) -> Option<std::process::Output> {
    cmd.stdin(Stdio::null()).output().ok()
}

/// True if `program` runs and exits 0 with the given arguments (output discarded).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    probe(Command::new(program).args(args)).is_some_and(|o| o.status.success())
}

/// The effective uid, from /proc/self/status (no libc needed).
pub fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Uid: real effective saved fs
    let euid = line
        .split_whitespace()
        .nth(2)
        .context("malformed Uid: line in /proc/self/status")?;
    euid.parse()
        .context("malformed Uid: line in /proc/self/status")
}

pub fn is_root() -> bool {
    effective_uid().is_ok_and(|uid| uid == 0)
}

/// Mount entries (device, mount point, fs type) from /proc/self/mounts.
fn mounts() -> Result<Vec<(String, PathBuf, String)>> {
    let text = std::fs::read_to_string("/proc/self/mounts").context("read /proc/self/mounts")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let dev = fields.next()?;
            let dir = fields.next()?;
            let fstype = fields.next()?;
            Some((
                dev.to_owned(),
                PathBuf::from(unescape_mount(dir)),
                fstype.to_owned(),
            ))
        })
        .collect())
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
pub fn cgroup2_mount() -> Result<PathBuf> {
    mounts()?
        .into_iter()
        .find(|(_, _, fstype)| fstype == "cgroup2")
        .map(|(_, dir, _)| dir)
        .context("no cgroup2 filesystem is mounted (see /proc/self/mounts); mesh needs cgroup v2")
}

/// True if a bpf filesystem is mounted at `dir`.
pub fn bpffs_mounted_at(dir: &Path) -> Result<bool> {
    Ok(mounts()?
        .iter()
        .any(|(_, d, fstype)| fstype == "bpf" && d == dir))
}

/// Mount bpffs at /sys/fs/bpf unless it already is.
pub fn ensure_bpffs() -> Result<()> {
    let dir = Path::new("/sys/fs/bpf");
    if bpffs_mounted_at(dir)? {
        println!("ok: bpffs already mounted at {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir))
        .context("mount bpffs at /sys/fs/bpf")
}

/// Kills what is left in a cgroup tree this run made (cgroup.kill) and
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
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Waits up to `wait` for `child` to exit by itself, then kills it; reaps it
/// either way. Returns the status when it exited in time.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    wait: std::time::Duration,
) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SIGTERM (by pid, a child we started), then SIGKILL after `grace`.
pub fn terminate(
    child: &mut std::process::Child,
    grace: std::time::Duration,
) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    wait_or_kill(child, grace)
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

    #[test]
    fn quotes_for_display() {
        assert_eq!(quote(OsStr::new("abc")), "abc");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }
}
