//! Daemon configuration (`mesh-agent run --config FILE`, ARCHITECTURE.md
//! section 4) and the daemon's named constants, kept in one place so that
//! every default and limit can be found and changed here.

use crate::admin::roles::AdminGroups;
use crate::policy::yaml;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Port of the mesh listener that governed connects are redirected to.
pub const DEFAULT_LISTEN_PORT: u16 = 15001;
/// Default IPv4 listener.
pub const DEFAULT_LISTEN_V4: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_LISTEN_PORT));
/// Default IPv6 listener.
pub const DEFAULT_LISTEN_V6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::LOCALHOST,
    DEFAULT_LISTEN_PORT,
    0,
    0,
));
/// Default listeners: one per family, same port.
pub const DEFAULT_LISTEN: [SocketAddr; 2] = [DEFAULT_LISTEN_V4, DEFAULT_LISTEN_V6];
/// Port of `/metrics` (the port OpenTelemetry's Prometheus exporters use).
pub const DEFAULT_METRICS_PORT: u16 = 9464;
/// Default `/metrics`, `/healthz`, `/readyz` address.
pub const DEFAULT_METRICS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_METRICS_PORT));
/// Default admin API socket (also `meshctl --socket`'s default).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/mesh/admin.sock";
/// Default group of the admin API's viewers (read-only requests); the
/// socket file belongs to it.
pub const DEFAULT_ADMIN_VIEWERS_GROUP: &str = "mesh-view";
/// Default group of the admin API's operators (every request).
pub const DEFAULT_ADMIN_OPERATORS_GROUP: &str = "mesh-admin";
/// Default directory for pinned maps and links.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/mesh";
/// Default directory for the daemon's state: the budget ledger, the selector
/// record and the mesh CA (connection records are kept in memory only).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mesh";
/// Default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/mesh/policies";
/// `parent_cgroup` defaults to this child of `cgroup_root`.
pub const DEFAULT_PARENT_CGROUP_NAME: &str = "mesh";
/// Where the cgroup2 mount point is looked up.
pub const PROC_MOUNTS: &str = "/proc/self/mounts";
/// File name used in errors when no config file was given.
pub const BUILTIN_CONFIG_NAME: &str = "<built-in defaults>";

/// How often tags of cgroups removed without `untag` are dropped.
pub const TAG_GC_INTERVAL: Duration = Duration::from_secs(30);

/// How often `policy_dir` is checked for changes (see `crate::policy_watch`).
pub const POLICY_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// After a change is seen, how long the directory must stay unchanged before
/// it is loaded (editors and ConfigMap updates write in bursts).
pub const POLICY_SETTLE_TIME: Duration = Duration::from_millis(150);
/// How many times a burst may keep changing before it is loaded anyway
/// (a file rewritten continuously must not postpone reloads forever).
pub const POLICY_SETTLE_MAX_ROUNDS: u32 = 10;
/// How often cgroups below `attach_cgroup` are matched against the policies'
/// `match.cgroup` selectors.
pub const SELECTOR_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// In `data_dir`: which tags policy selectors made, so that a restarted
/// daemon undoes them (and only them) when a selector changes.
pub const SELECTOR_RECORD_FILE: &str = "selector-tags.json";
/// In `data_dir`: the agents under quarantine, so that their new cgroups
/// (a new exec, a selector match, a restarted daemon) are quarantined too.
pub const QUARANTINE_RECORD_FILE: &str = "quarantine.json";
/// Refusals remembered per agent for `quarantine.triggers`, at most (the
/// largest `denials` a trigger can count is capped to it).
pub const QUARANTINE_TRIGGER_MAX_REFUSALS: usize = 10_000;

// --- daemon start-up, environment knobs, meshctl ---

/// The Linux capabilities the daemon needs: (number in linux/capability.h,
/// name, what for).
pub const REQUIRED_CAPABILITIES: [(u32, &str, &str); 3] = [
    (39, "CAP_BPF", "load the kernel programs and use their maps"),
    (
        12,
        "CAP_NET_ADMIN",
        "attach cgroup socket programs and mark upstream sockets",
    ),
    (
        21,
        "CAP_SYS_ADMIN",
        "mount bpffs, pin objects and manage cgroups",
    ),
];
/// Environment: the number of proxy worker threads (a tuning knob for
/// measurement, docs/benchmarks.md); unset, one per CPU.
pub const PROXY_WORKERS_ENV: &str = "MESH_PROXY_WORKERS";
/// Environment: the number of worker threads of the daemon's tokio runtime
/// (a tuning knob for measurement, docs/benchmarks.md); unset, one per CPU.
pub const RUNTIME_WORKER_THREADS_ENV: &str = "MESH_WORKER_THREADS";
/// Environment: `meshctl --socket`.
pub const ADMIN_SOCKET_ENV: &str = "MESH_ADMIN_SOCKET";
/// `meshctl` exits with this when the daemon refused or the command failed.
pub const MESHCTL_EXIT_FAILED: u8 = 1;
/// `meshctl` exits with this when the daemon's admin socket is unreachable.
pub const MESHCTL_EXIT_UNREACHABLE: u8 = 3;

/// Proxy worker threads: [`PROXY_WORKERS_ENV`] when set to a positive
/// number, else one per CPU.
pub fn proxy_worker_count() -> usize {
    positive_env(PROXY_WORKERS_ENV)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The tokio runtime's worker threads from [`RUNTIME_WORKER_THREADS_ENV`];
/// `None`: tokio's default (one per CPU), also for 0 or a value that is not
/// a number (tokio panics on 0).
pub fn runtime_worker_threads() -> Option<usize> {
    positive_env(RUNTIME_WORKER_THREADS_ENV)
}

/// A count from the environment variable `name`: None when unset, not a
/// number, or 0.
fn positive_env(name: &str) -> Option<usize> {
    positive(std::env::var(name).ok().as_deref())
}

fn positive(value: Option<&str>) -> Option<usize> {
    value
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
}

/// listen(2) backlog of the proxy listeners (tokio's default for bind).
pub const LISTEN_BACKLOG: u32 = 1024;
/// How long a stopping daemon lets connections in flight finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection records kept in memory for `meshctl` (oldest dropped first).
pub const RECORD_RING_CAPACITY: usize = 4096;
/// Output tokens reserved for a budgeted LLM request that states no bound
/// (defined where calls are charged).
pub use crate::budget::charge::DEFAULT_MAX_OUTPUT_TOKENS;
/// A budget with `on_exhaust: quarantine` quarantines its agent this long
/// after the refusal's last byte was handed to the connection: the kernel
/// quarantine drops the agent's traffic, and the refusal must reach it first.
pub const QUARANTINE_AFTER_REFUSAL: Duration = Duration::from_millis(50);
/// The budget ledger's redb file in data_dir.
pub const BUDGET_LEDGER_FILE: &str = "budgets.redb";
/// Largest admin API request body; requests are small JSON documents.
pub const ADMIN_MAX_BODY_BYTES: usize = 64 * 1024;
/// Per-direction relay buffer (and pipe size for splice).
pub const RELAY_BUFFER_BYTES: usize = 64 * 1024;
/// Request bodies that decide policy (JSON-RPC, LLM requests) are buffered up
/// to this size; larger ones are refused with 413 (`max_body_bytes`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long the proxy waits for a client's first bytes to tell TLS and HTTP
/// from other protocols; a client that stays silent (server-speaks-first
/// protocols) is relayed as opaque TCP after it.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the proxy waits for a client's first bytes when the destination
/// is governed above TCP (an `mcp`, `llm`, `a2a` or `tls.terminate` entry):
/// such a connection is never relayed as opaque bytes, so a client that
/// stays silent (or stops mid-prefix) this long is refused.
pub const L7_SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy waits for the original destination to accept.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// --- proxy ---
/// The mesh CA certificate, relative to the data directory.
pub const CA_CERT_FILE: &str = "ca/mesh-ca.pem";
/// The mesh CA private key (PKCS#8 PEM), relative to the data directory.
pub const CA_KEY_FILE: &str = "ca/mesh-ca.key";
/// The mesh CA's subject common name.
pub const CA_COMMON_NAME: &str = "mesh agent CA";
/// How long a new mesh CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A leaf is valid from this long before it is minted, so that a client whose
/// clock is somewhat behind still accepts it.
pub const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf is valid for this long after it is minted. Short, because leaves are
/// cheap to mint and never revoked.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf this close to its expiry is minted anew, so that no handshake
/// is served a certificate about to expire mid-connection.
pub const LEAF_REMINT_BEFORE: Duration = Duration::from_secs(3600);
/// How many leaves are kept; when full, expiring ones go first, then the
/// oldest.
pub const LEAF_CACHE_MAX: usize = 1024;
/// How many TLS sessions the terminating side keeps for resumption, shared by
/// all server configurations built from one
/// [`MeshCa`](crate::proxy::tls::MeshCa).
pub const TLS_SESSION_CACHE_SIZE: usize = 4096;
/// How long the accept loop waits after a failed accept (EMFILE and
/// friends) instead of spinning.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Idle upstream HTTP/1.1 connections kept per pool key; more are opened when
/// all are busy and closed when they come back to a full pool.
pub const POOL_MAX_IDLE_PER_KEY: usize = 32;
/// Upstream pool shards: idle connections are kept per proxy worker, workers
/// beyond this count share shards.
pub const POOL_SHARDS: usize = 16;
/// How often a draining proxy worker checks whether its connections are done.
pub const WORKER_DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The environment variable that chooses how opaque bytes are relayed:
/// `splice` or `copy` (for measurement; see `proxy/relay.rs`). Anything else
/// keeps [`DEFAULT_RELAY_STRATEGY`].
pub const RELAY_STRATEGY_ENV: &str = "MESH_RELAY";
/// How opaque bytes are relayed by default: chosen by measurement, see
/// docs/benchmarks.md.
pub const DEFAULT_RELAY_STRATEGY: crate::proxy::relay::Strategy =
    crate::proxy::relay::Strategy::Splice;

// --- proxy: HTTP ---
/// Largest single SSE event the response inspector parses; larger events
/// pass through unparsed (the stream is not cut for it).
pub const MAX_SSE_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Calls whose outcome arrives on another request (2024-11-05 responses on
/// the GET stream; replies to server-to-client requests) are remembered this
/// long and at most this many at once.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
pub const MAX_PENDING: usize = 16_384;
/// How long a client may take to send a request's head (hyper's
/// `header_read_timeout`, also the idle bound between keep-alive requests):
/// a connection that dribbles its head is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `limits.connections_per_agent`.
pub const DEFAULT_CONNECTIONS_PER_AGENT: usize = 1024;
/// Default `limits.requests_per_agent`.
pub const DEFAULT_REQUESTS_PER_AGENT: usize = 256;

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
            })
        );
        // Absolute cgroup paths are taken as they are.
        let c = load("attach_cgroup: /sys/fs/cgroup/a\nparent_cgroup: /sys/fs/cgroup/a/b\n");
        assert!(matches!(c, Ok(c) if c.parent_cgroup == Path::new("/sys/fs/cgroup/a/b")));
    }

    #[test]
    fn config_errors_are_located() {
        let cases: &[(&str, &str)] = &[
            ("data_dir: /d\nlisen: []\n", "mesh.yaml:2:1: unknown field `lisen`, expected one of `cgroup_root`, `parent_cgroup`, `attach_cgroup`, `bpffs_dir`, `listen`, `admin_socket`, `admin_viewers_group`, `admin_operators_group`, `metrics`, `data_dir`, `policy_dir`, `max_body_bytes`, `limits`"),
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
