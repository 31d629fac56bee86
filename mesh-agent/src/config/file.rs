//! The configuration file: parsed from YAML, checked, every error located
//! at the value it is about. Defaults and limits are the constants of the
//! parent module.

use super::*;
use crate::admin::roles::AdminGroups;
use crate::policy::yaml;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// The daemon's settings, validated: every path is absolute and the cgroup
/// layout is consistent (see [`Config::from_yaml`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cgroup_root: PathBuf,
    pub parent_cgroup: PathBuf,
    pub attach_cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub admin_socket: PathBuf,
    /// The groups holding the admin API's roles.
    pub admin_groups: AdminGroups,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_dir: PathBuf,
    pub max_body_bytes: usize,
    pub limits: crate::proxy::Limits,
    /// Static name → addresses map (`hosts:`): names it holds are bound to
    /// these addresses only, without asking the system resolver.
    pub hosts: std::collections::HashMap<String, Vec<IpAddr>>,
}

/// A config problem; located ones point at the value in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}:{line}:{column}: {message}")]
    Located {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
}

impl Config {
    /// Reads `path`, or uses the embedded defaults when `path` is `None`.
    /// The cgroup2 mount is read from /proc/self/mounts unless the file sets
    /// `cgroup_root`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        // An unreadable mounts file behaves like one without cgroup2: the
        // error then says to set cgroup_root.
        let mounts = std::fs::read_to_string(PROC_MOUNTS).unwrap_or_default();
        match path {
            None => Config::from_yaml(BUILTIN_CONFIG_NAME, "", &mounts),
            Some(path) => {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    file: file.clone(),
                    error,
                })?;
                Config::from_yaml(&file, &text, &mounts)
            }
        }
    }

    /// Parses and validates a config text (pure). `mounts` is the content of
    /// /proc/self/mounts. An empty text gives the defaults.
    ///
    /// Checks: unknown keys; absolute paths; `listen` holds 1 or 2 loopback
    /// addresses, at most one per family, on one port (the kernel programs
    /// redirect to one port); `parent_cgroup` and `attach_cgroup` lie inside
    /// `cgroup_root`, and `parent_cgroup` inside `attach_cgroup`, or processes
    /// started by `meshctl exec` would escape governance.
    pub fn from_yaml(file_name: &str, text: &str, mounts: &str) -> Result<Config, ConfigError> {
        let located = |(line, column): (usize, usize), message: String| ConfigError::Located {
            file: file_name.to_owned(),
            line,
            column,
            message,
        };
        let mut raw = None;
        for (index, parsed) in yaml::documents::<RawConfig>(text) {
            match parsed {
                Err(e) => return Err(located((e.line, e.column), e.message)),
                Ok(None) => {}
                Ok(Some(_)) if raw.is_some() => {
                    return Err(ConfigError::File {
                        file: file_name.to_owned(),
                        message: format!(
                        "document {} is one too many: the config must be a single YAML document",
                        index + 1
                    ),
                    })
                }
                Ok(Some(r)) => raw = Some(r),
            }
        }
        let raw = raw.unwrap_or_default();
        let at = |key: &str| yaml::locate_key(text, 0, key);

        let cgroup_root = match raw.cgroup_root {
            Some(AbsPath(p)) => p,
            None => cgroup2_mount(mounts).ok_or_else(|| ConfigError::File {
                file: file_name.to_owned(),
                message: format!(
                    "no cgroup2 filesystem is mounted (none in {PROC_MOUNTS}); mount one \
                     (mount -t cgroup2 none /sys/fs/cgroup) or set cgroup_root"
                ),
            })?,
        };
        let below_root = |p: Option<CgroupPath>, default: PathBuf| match p {
            Some(CgroupPath(p)) if p.is_relative() => cgroup_root.join(p),
            Some(CgroupPath(p)) => p,
            None => default,
        };
        let parent_cgroup = below_root(
            raw.parent_cgroup,
            cgroup_root.join(DEFAULT_PARENT_CGROUP_NAME),
        );
        let attach_cgroup = below_root(raw.attach_cgroup, cgroup_root.clone());

        let fail = |key: &str, message: String| match at(key) {
            Some(pos) => located(pos, message),
            None => ConfigError::File {
                file: file_name.to_owned(),
                message,
            },
        };
        if !attach_cgroup.starts_with(&cgroup_root) {
            return Err(fail(
                "attach_cgroup",
                format!(
                    "attach_cgroup {} is not inside cgroup_root {}",
                    attach_cgroup.display(),
                    cgroup_root.display()
                ),
            ));
        }
        if !parent_cgroup.starts_with(&cgroup_root) {
            return Err(fail(
                "parent_cgroup",
                format!(
                    "parent_cgroup {} is not inside cgroup_root {}",
                    parent_cgroup.display(),
                    cgroup_root.display()
                ),
            ));
        }
        if !parent_cgroup.starts_with(&attach_cgroup) {
            let key = if at("parent_cgroup").is_some() {
                "parent_cgroup"
            } else {
                "attach_cgroup"
            };
            return Err(fail(
                key,
                format!(
                    "parent_cgroup {} is not inside attach_cgroup {}: processes started by \
                     `meshctl exec` would not be governed",
                    parent_cgroup.display(),
                    attach_cgroup.display()
                ),
            ));
        }

        let mut hosts = std::collections::HashMap::new();
        for (name, addrs) in raw.hosts.unwrap_or_default() {
            let key = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
            let valid = !key.is_empty()
                && key.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid || addrs.is_empty() {
                return Err(fail(
                    "hosts",
                    format!("hosts entry {name:?} needs a DNS name and at least one address"),
                ));
            }
            hosts.insert(key, addrs);
        }
        let limits = raw.limits.unwrap_or_default();
        if limits.connections_per_agent == 0 || limits.requests_per_agent == 0 {
            return Err(fail(
                "limits",
                "limits must be at least 1 (0 would refuse every agent)".into(),
            ));
        }

        let path = |p: Option<AbsPath>, default: &str| {
            p.map_or_else(|| PathBuf::from(default), |AbsPath(p)| p)
        };
        Ok(Config {
            cgroup_root,
            parent_cgroup,
            attach_cgroup,
            bpffs_dir: path(raw.bpffs_dir, DEFAULT_BPFFS_DIR),
            listen: raw.listen.map_or_else(|| DEFAULT_LISTEN.to_vec(), |l| l.0),
            admin_socket: path(raw.admin_socket, DEFAULT_ADMIN_SOCKET),
            admin_groups: AdminGroups {
                viewers: raw
                    .admin_viewers_group
                    .map_or_else(|| DEFAULT_ADMIN_VIEWERS_GROUP.to_owned(), |g| g.0),
                operators: raw
                    .admin_operators_group
                    .map_or_else(|| DEFAULT_ADMIN_OPERATORS_GROUP.to_owned(), |g| g.0),
            },
            metrics: raw.metrics.map_or(DEFAULT_METRICS, |m| m.0),
            data_dir: path(raw.data_dir, DEFAULT_DATA_DIR),
            policy_dir: path(raw.policy_dir, DEFAULT_POLICY_DIR),
            max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            limits,
            hosts,
        })
    }
}

/// The mount point of the first cgroup2 filesystem in `mounts` (the text of
/// /proc/self/mounts), with the kernel's octal escapes (`\040` for a space)
/// undone.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let _source = fields.next()?;
        let target = fields.next()?;
        let fstype = fields.next()?;
        (fstype == "cgroup2")
            .then(|| PathBuf::from(OsString::from_vec(unescape_mount_field(target))))
    })
}

/// Undoes the `\ooo` escapes the kernel writes for space, tab, newline and
/// backslash in mount fields. Anything else passes through unchanged.
fn unescape_mount_field(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The config file as written; absent keys take the defaults.
#[derive(Debug, Default, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of mesh-agent settings")]
struct RawConfig {
    cgroup_root: Option<AbsPath>,
    parent_cgroup: Option<CgroupPath>,
    attach_cgroup: Option<CgroupPath>,
    bpffs_dir: Option<AbsPath>,
    listen: Option<Listen>,
    admin_socket: Option<AbsPath>,
    admin_viewers_group: Option<GroupName>,
    admin_operators_group: Option<GroupName>,
    metrics: Option<Metrics>,
    data_dir: Option<AbsPath>,
    policy_dir: Option<AbsPath>,
    max_body_bytes: Option<usize>,
    limits: Option<crate::proxy::Limits>,
    hosts: Option<std::collections::HashMap<String, Vec<IpAddr>>>,
}

/// A Unix group name: 1 to 32 characters of A-Z a-z 0-9 . _ -, not
/// starting with `-`.
#[derive(Debug)]
struct GroupName(String);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GroupName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Unix group name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<GroupName, E> {
                let ok = (1..=32).contains(&name.len())
                    && !name.starts_with('-')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if ok {
                    Ok(GroupName(name.to_owned()))
                } else {
                    Err(E::custom(format!(
                        "invalid group name {name:?}: use 1 to 32 characters of A-Z a-z 0-9 . _ -"
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// An absolute path without `..` (a root daemon should not depend on its
/// working directory, and `..` would defeat the containment checks).
#[derive(Debug)]
struct AbsPath(PathBuf);

/// A cgroup path: absolute, or relative to `cgroup_root`; no `..`.
#[derive(Debug)]
struct CgroupPath(PathBuf);

/// Lexically cleaned path (`.` and repeated or trailing `/` dropped), or why not.
fn clean_path(v: &str, absolute: bool) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("empty path".into());
    }
    let p = Path::new(v);
    if absolute && !p.is_absolute() {
        return Err(format!("expected an absolute path, got {v:?}"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("path {v:?} must not contain \"..\""));
    }
    Ok(p.components().collect())
}

fn path_visitor<'de, D: Deserializer<'de>>(d: D, absolute: bool) -> Result<PathBuf, D::Error> {
    struct V(bool);
    impl Visitor<'_> for V {
        type Value = PathBuf;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(if self.0 { "an absolute path" } else { "a path" })
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
            clean_path(v, self.0).map_err(E::custom)
        }
    }
    d.deserialize_str(V(absolute))
}

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        path_visitor(d, true).map(AbsPath)
    }
}

impl<'de> Deserialize<'de> for CgroupPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        path_visitor(d, false).map(CgroupPath)
    }
}

/// `metrics:` — any socket address (it may be scraped from elsewhere).
#[derive(Debug)]
struct Metrics(SocketAddr);

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Metrics;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a socket address such as \"127.0.0.1:9464\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Metrics, E> {
                v.parse().map(Metrics).map_err(|_| {
                    E::custom(format!(
                        "invalid metrics address {v:?}: expected IP:PORT such as \"127.0.0.1:9464\" or \"[::1]:9464\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// One `listen:` entry: a loopback address with a fixed port.
struct ListenAddr(SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ListenAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a listen address such as \"127.0.0.1:15001\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddr, E> {
                let addr: SocketAddr = v.parse().map_err(|_| {
                    E::custom(format!(
                        "invalid listen address {v:?}: expected IP:PORT such as \"127.0.0.1:15001\" or \"[::1]:15001\""
                    ))
                })?;
                if !addr.ip().is_loopback() {
                    return Err(E::custom(format!(
                        "listen address {addr} is not a loopback address: governed connects are \
                         redirected to loopback (127.0.0.0/8 or ::1)"
                    )));
                }
                if addr.port() == 0 {
                    return Err(E::custom(format!(
                        "listen address {addr} needs a fixed port: the kernel programs redirect to it"
                    )));
                }
                Ok(ListenAddr(addr))
            }
        }
        d.deserialize_str(V)
    }
}

/// `listen:` — the checks across entries run in `visit_seq`, so that the
/// error points at the list.
#[derive(Debug)]
struct Listen(Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a list of loopback addresses, e.g. [\"127.0.0.1:15001\", \"[::1]:15001\"]",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
                let mut addrs = Vec::new();
                while let Some(ListenAddr(a)) = seq.next_element()? {
                    addrs.push(a);
                }
                let v4 = addrs
                    .iter()
                    .filter(|a| matches!(a.ip(), IpAddr::V4(_)))
                    .count();
                if addrs.is_empty() {
                    return Err(de::Error::custom("listen must hold at least one address"));
                }
                if v4 > 1 || addrs.len() - v4 > 1 {
                    return Err(de::Error::custom(
                        "listen may hold at most one IPv4 and one IPv6 address",
                    ));
                }
                if let [a, b] = addrs.as_slice() {
                    if a.port() != b.port() {
                        return Err(de::Error::custom(format!(
                            "listen addresses must use the same port (got {} and {})",
                            a.port(),
                            b.port()
                        )));
                    }
                }
                Ok(Listen(addrs))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_from_the_environment_are_positive_numbers() {
        assert_eq!(positive(Some("3")), Some(3));
        // tokio panics on 0 worker threads: 0 means the default.
        assert_eq!(positive(Some("0")), None);
        assert_eq!(positive(Some("many")), None);
        assert_eq!(positive(None), None);
    }

    const MOUNTS: &str = "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
                          cgroup /sys/fs/cgroup/unified cgroup rw 0 0\n\
                          cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n\
                          cgroup2 /other cgroup2 rw 0 0\n";

    fn load(text: &str) -> Result<Config, String> {
        Config::from_yaml("mesh.yaml", text, MOUNTS).map_err(|e| e.to_string())
    }

    fn err(text: &str) -> String {
        match load(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn config_defaults_from_mounts() {
        let c = Config::from_yaml(BUILTIN_CONFIG_NAME, "", MOUNTS).map_err(|e| e.to_string());
        let expected = Config {
            cgroup_root: "/sys/fs/cgroup".into(),
            parent_cgroup: "/sys/fs/cgroup/mesh".into(),
            attach_cgroup: "/sys/fs/cgroup".into(),
            bpffs_dir: "/sys/fs/bpf/mesh".into(),
            listen: vec![DEFAULT_LISTEN_V4, DEFAULT_LISTEN_V6],
            admin_socket: "/run/mesh/admin.sock".into(),
            admin_groups: AdminGroups {
                viewers: "mesh-view".into(),
                operators: "mesh-admin".into(),
            },
            metrics: DEFAULT_METRICS,
            data_dir: "/var/lib/mesh".into(),
            policy_dir: "/etc/mesh/policies".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            limits: Default::default(),
            hosts: Default::default(),
        };
        assert_eq!(c, Ok(expected.clone()));
        assert_eq!(DEFAULT_LISTEN_V6.to_string(), "[::1]:15001");
        assert_eq!(DEFAULT_METRICS.to_string(), "127.0.0.1:9464");
        // Comments only: still the defaults.
        assert_eq!(load("# nothing\n"), Ok(expected));
    }

    #[test]
    fn config_cgroup2_mount_unescapes() {
        assert_eq!(cgroup2_mount(MOUNTS), Some(PathBuf::from("/sys/fs/cgroup")));
        let m = "none /tmp/my\\040cgroups\\134x cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount(m), Some(PathBuf::from("/tmp/my cgroups\\x")));
        assert_eq!(
            cgroup2_mount("none /a\\0 cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/a\\0"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn config_no_cgroup2_mount_is_a_clear_error() {
        let e = Config::from_yaml("mesh.yaml", "data_dir: /d\n", "proc /proc proc rw 0 0\n")
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("mesh.yaml: no cgroup2 filesystem is mounted (none in /proc/self/mounts); mount one \
                 (mount -t cgroup2 none /sys/fs/cgroup) or set cgroup_root"
                .into())
        );
        // With cgroup_root set the mounts are not needed.
        let c = Config::from_yaml("mesh.yaml", "cgroup_root: /cg\n", "");
        assert!(matches!(c, Ok(c) if c.parent_cgroup == Path::new("/cg/mesh")));
    }

    #[test]
    fn config_full_file_and_relative_cgroups() {
        let text = "cgroup_root: /sys/fs/cgroup/\n\
                    attach_cgroup: mesh-test\n\
                    parent_cgroup: mesh-test/./agents\n\
                    bpffs_dir: /sys/fs/bpf/mesh-test\n\
                    listen: [\"127.0.0.5:16001\"]\n\
                    admin_socket: /tmp/t/admin.sock\n\
                    admin_viewers_group: ops-read\n\
                    metrics: \"[::]:0\"\n\
                    data_dir: /tmp/t/data\n\
                    policy_dir: /tmp/t/policies\n";
        let c = load(text);
        assert_eq!(
            c,
            Ok(Config {
                cgroup_root: "/sys/fs/cgroup".into(),
                parent_cgroup: "/sys/fs/cgroup/mesh-test/agents".into(),
                attach_cgroup: "/sys/fs/cgroup/mesh-test".into(),
                bpffs_dir: "/sys/fs/bpf/mesh-test".into(),
                listen: vec![SocketAddr::new(Ipv4Addr::new(127, 0, 0, 5).into(), 16001)],
                admin_socket: "/tmp/t/admin.sock".into(),
                admin_groups: AdminGroups {
                    viewers: "ops-read".into(),
                    operators: "mesh-admin".into(),
                },
                metrics: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
                data_dir: "/tmp/t/data".into(),
                policy_dir: "/tmp/t/policies".into(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                limits: Default::default(),
                hosts: Default::default(),
            })
        );
        // Absolute cgroup paths are taken as they are.
        let c = load("attach_cgroup: /sys/fs/cgroup/a\nparent_cgroup: /sys/fs/cgroup/a/b\n");
        assert!(matches!(c, Ok(c) if c.parent_cgroup == Path::new("/sys/fs/cgroup/a/b")));
    }

    #[test]
    fn the_hosts_map_binds_names_to_addresses() {
        let c = load("hosts:\n  API.Example.: [\"127.0.0.9\", \"::1\"]\n").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.hosts["api.example"], vec![ip("127.0.0.9"), ip("::1")]);
        let bad = load("hosts:\n  \"bad name\": [\"127.0.0.9\"]\n").unwrap_err();
        assert!(bad.contains("hosts entry \"bad name\""), "{bad}");
        let empty = load("hosts:\n  api.example: []\n").unwrap_err();
        assert!(empty.contains("at least one address"), "{empty}");
        let not_ip = load("hosts:\n  api.example: [\"example.org\"]\n").unwrap_err();
        assert!(not_ip.starts_with("mesh.yaml:2:"), "{not_ip}");
    }

    #[test]
    fn config_errors_are_located() {
        let cases: &[(&str, &str)] = &[
            ("data_dir: /d\nlisen: []\n", "mesh.yaml:2:1: unknown field `lisen`, expected one of `cgroup_root`, `parent_cgroup`, `attach_cgroup`, `bpffs_dir`, `listen`, `admin_socket`, `admin_viewers_group`, `admin_operators_group`, `metrics`, `data_dir`, `policy_dir`, `max_body_bytes`, `limits`, `hosts`"),
            ("data_dir: var/lib\n", "mesh.yaml:1:11: expected an absolute path, got \"var/lib\""),
            ("policy_dir: /etc/../x\n", "mesh.yaml:1:13: path \"/etc/../x\" must not contain \"..\""),
            ("listen: []\n", "mesh.yaml:1:9: listen must hold at least one address"),
            ("listen:\n  - 127.0.0.1:15001\n  - 10.0.0.1:15001\n", "mesh.yaml:3:5: listen address 10.0.0.1:15001 is not a loopback address: governed connects are redirected to loopback (127.0.0.0/8 or ::1)"),
            ("listen: [\"127.0.0.1:15001\", \"127.0.0.2:15001\"]\n", "mesh.yaml:1:9: listen may hold at most one IPv4 and one IPv6 address"),
            ("listen:\n  - \"127.0.0.1:15001\"\n  - \"[::1]:15002\"\n", "mesh.yaml:2:3: listen addresses must use the same port (got 15001 and 15002)"),
            ("listen: [\"localhost:15001\"]\n", "mesh.yaml:1:10: invalid listen address \"localhost:15001\": expected IP:PORT such as \"127.0.0.1:15001\" or \"[::1]:15001\""),
            ("listen: [\"127.0.0.1:0\"]\n", "mesh.yaml:1:10: listen address 127.0.0.1:0 needs a fixed port: the kernel programs redirect to it"),
            ("listen: \"127.0.0.1:15001\"\n", "mesh.yaml:1:9: invalid type: string \"127.0.0.1:15001\", expected a list of loopback addresses, e.g. [\"127.0.0.1:15001\", \"[::1]:15001\"]"),
            ("metrics: 9464\n", "mesh.yaml:1:10: invalid metrics address \"9464\": expected IP:PORT such as \"127.0.0.1:9464\" or \"[::1]:9464\""),
            ("- a\n", "mesh.yaml:1:1: invalid type: sequence, expected a mapping of mesh-agent settings"),
            ("data_dir: /a\ndata_dir: /b\n", "mesh.yaml:2:1: duplicate key `data_dir`: each key may appear once in a mapping"),
            ("cgroup_root: /cg\nparent_cgroup: /elsewhere/mesh\n", "mesh.yaml:2:16: parent_cgroup /elsewhere/mesh is not inside cgroup_root /cg"),
            ("attach_cgroup: /sys/fs/cgroupx\n", "mesh.yaml:1:16: attach_cgroup /sys/fs/cgroupx is not inside cgroup_root /sys/fs/cgroup"),
            ("attach_cgroup: test\nparent_cgroup: other/agents\n", "mesh.yaml:2:16: parent_cgroup /sys/fs/cgroup/other/agents is not inside attach_cgroup /sys/fs/cgroup/test: processes started by `meshctl exec` would not be governed"),
            ("attach_cgroup: test\n", "mesh.yaml:1:16: parent_cgroup /sys/fs/cgroup/mesh is not inside attach_cgroup /sys/fs/cgroup/test: processes started by `meshctl exec` would not be governed"),
            ("admin_operators_group: \"a b\"\n", "mesh.yaml:1:24: invalid group name \"a b\": use 1 to 32 characters of A-Z a-z 0-9 . _ -"),
            ("data_dir: /a\n---\ndata_dir: /b\n", "mesh.yaml: document 2 is one too many: the config must be a single YAML document"),
        ];
        let mut failures = Vec::new();
        for (text, want) in cases {
            let got = err(text);
            if got != *want {
                failures.push(format!("{text:?}\n   got: {got}\n  want: {want}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn config_load_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("mesh-config-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("mesh.yaml");
        let written = std::fs::write(&file, "cgroup_root: /cg\npolicy_dir: /p\n");
        assert!(written.is_ok());
        let c = Config::load(Some(&file));
        assert!(
            matches!(&c, Ok(c) if c.policy_dir == Path::new("/p") && c.cgroup_root == Path::new("/cg")),
            "{c:?}"
        );
        let missing = Config::load(Some(&dir.join("missing.yaml"))).map_err(|e| e.to_string());
        assert!(
            matches!(&missing, Err(e) if e.contains("missing.yaml: cannot read: ")),
            "{missing:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
