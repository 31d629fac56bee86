//! Every map is pinned by name under `<bpffs_dir>/v<LAYOUT_VERSION>/`, so tags,
//! quarantine and counters outlive the daemon and a restarted one reuses them.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuHashMap, RingBuf},
};
use mesh_common::{
    CgroupCounters, CgroupTag, IngressKey, MeshConfig, OrigDst, PeerKey, UdpAllowKey,
};

/// Governed cgroups: cgroup id -> agent and flags.
#[map(name = "MESH_TAGS")]
pub static MESH_TAGS: HashMap<u64, CgroupTag> = HashMap::pinned(16_384, 0);

/// Cgroups the daemon has classified for the policy selectors: cgroup id ->
/// `CLASS_*` bits. A child of a `CLASS_WATCH_CHILDREN` cgroup with neither a
/// tag nor an entry here is not classified yet: its connects are refused.
#[map(name = "MESH_CLASSIFIED")]
pub static MESH_CLASSIFIED: HashMap<u64, u32> = HashMap::pinned(65_536, 0);

/// Redirect target and attach level, index 0.
#[map(name = "MESH_CONFIG")]
pub static MESH_CONFIG: Array<MeshConfig> = Array::pinned(1, 0);

/// Socket cookie -> original destination, between connect() and established.
/// LRU: a connect that never completes (daemon down) ages out.
#[map(name = "MESH_SOCKS")]
pub static MESH_SOCKS: LruHashMap<u64, OrigDst> = LruHashMap::pinned(65_536, 0);

/// Client address -> original destination, between established and accept().
#[map(name = "MESH_PEERS")]
pub static MESH_PEERS: LruHashMap<PeerKey, OrigDst> = LruHashMap::pinned(65_536, 0);

/// Governing cgroup id -> counters (per CPU: no atomics on the hot path).
#[map(name = "MESH_COUNTERS")]
pub static MESH_COUNTERS: PerCpuHashMap<u64, CgroupCounters> = PerCpuHashMap::pinned(16_384, 0);

/// Refused or unrecorded connects, for the daemon's connection records.
#[map(name = "MESH_EVENTS")]
pub static MESH_EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// UDP destinations each agent's policy allows (`udp://` egress entries):
/// an LPM trie over agent, port and address prefix, filled by the daemon.
#[map(name = "MESH_UDP_ALLOW")]
pub static MESH_UDP_ALLOW: LpmTrie<UdpAllowKey, u32> = LpmTrie::pinned(16_384, 0);

/// Ports each agent may bind on non-loopback addresses (`ingress.allow`).
#[map(name = "MESH_INGRESS")]
pub static MESH_INGRESS: HashMap<IngressKey, u32> = HashMap::pinned(16_384, 0);
