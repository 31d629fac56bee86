//! The daemon's config file (mesh-agent's `--config`), written from a typed
//! struct: one writer for the tests, the benchmark, the demo and
//! `cargo xtask run`, with every path a quoted YAML string.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What a launcher sets in the daemon's config; the rest keeps the daemon's
/// defaults.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Comment lines at the top (without the `# `), saying who wrote it.
    pub header: Vec<String>,
    /// `cgroup_root`, when not the daemon's default (the cgroup2 mount).
    pub cgroup_root: Option<PathBuf>,
    /// Where the programs attach; never the cgroup root.
    pub attach_cgroup: PathBuf,
    /// Where `meshctl exec` creates the agents' cgroups.
    pub parent_cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    /// The proxy listens on 127.0.0.1 and [::1], on this port.
    pub listen_port: u16,
    pub admin_socket: PathBuf,
    /// `admin_viewers_group` and `admin_operators_group`, when not the
    /// daemon's defaults.
    pub admin_groups: Option<(String, String)>,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_dir: PathBuf,
}

impl DaemonConfig {
    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "# {line}");
        }
        if let Some(root) = &self.cgroup_root {
            let _ = writeln!(out, "cgroup_root: {}", yaml_str(root));
        }
        let port = self.listen_port;
        let _ = write!(
            out,
            "attach_cgroup: {attach}\n\
             parent_cgroup: {parent}\n\
             bpffs_dir: {bpffs}\n\
             listen: [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\n\
             admin_socket: {admin}\n\
             metrics: \"{metrics}\"\n\
             data_dir: {data}\n\
             policy_dir: {policies}\n",
            attach = yaml_str(&self.attach_cgroup),
            parent = yaml_str(&self.parent_cgroup),
            bpffs = yaml_str(&self.bpffs_dir),
            admin = yaml_str(&self.admin_socket),
            metrics = self.metrics,
            data = yaml_str(&self.data_dir),
            policies = yaml_str(&self.policy_dir),
        );
        if let Some((viewers, operators)) = &self.admin_groups {
            let _ = write!(
                out,
                "admin_viewers_group: {}\nadmin_operators_group: {}\n",
                yaml_str(Path::new(viewers)),
                yaml_str(Path::new(operators))
            );
        }
        out
    }

    /// Writes the YAML text to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_yaml())
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
    }
}

/// A YAML double-quoted scalar.
pub fn yaml_str(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_yaml() {
        assert_eq!(yaml_str(Path::new("/a/b")), "\"/a/b\"");
        assert_eq!(yaml_str(Path::new("/a\"b")), "\"/a\\\"b\"");
    }
}
