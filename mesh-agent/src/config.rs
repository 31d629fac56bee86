//! The daemon's named constants, kept in one place so that every default
//! and limit can be found and changed here, and its configuration file
//! (`mesh-agent run --config FILE`, ARCHITECTURE.md section 4), parsed and
//! validated in `config/file.rs`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

mod file;

pub use file::{cgroup2_mount, Config, ConfigError};

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
/// ... and at most this many bytes of them (as `records.rs` counts them).
pub const RECORD_RING_MAX_BYTES: usize = 64 * 1024 * 1024;
/// A call's arguments longer than this are kept in a record as a marker
/// with their length and a prefix.
pub const RECORD_ARGUMENTS_MAX_BYTES: usize = 16 * 1024;
/// Any other text of a record an agent can grow (names, paths, reasons,
/// error messages) is cut at this many bytes, marked.
pub const RECORD_TEXT_MAX_BYTES: usize = 4 * 1024;
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
/// ... of which one agent may hold this many.
pub const MAX_PENDING_PER_AGENT: usize = 4096;
/// How long a client may take to send a request's head (hyper's
/// `header_read_timeout`, also the idle bound between keep-alive requests):
/// a connection that dribbles its head is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `limits.connections_per_agent`.
pub const DEFAULT_CONNECTIONS_PER_AGENT: usize = 1024;
/// How long a name's addresses, as the system resolver gave them, are
/// trusted to bind the name (the resolver does not say its TTL).
pub const NAME_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a name that did not resolve stays unresolved.
pub const NAME_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long a lookup may take before the name binds nothing.
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Names kept resolved at once (agents choose the names they send).
pub const NAME_CACHE_MAX: usize = 4096;
/// Distinct agent-chosen label values (MCP server and tool names, models)
/// kept per agent in the metrics; more are counted as `other`.
pub const LABEL_VALUES_PER_AGENT: usize = 100;
/// Default `limits.requests_per_agent`.
pub const DEFAULT_REQUESTS_PER_AGENT: usize = 256;
