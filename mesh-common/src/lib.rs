//! Types shared between the kernel programs (`mesh-ebpf`) and user space
//! (`mesh-agent`). Everything here is `#[repr(C)]`, has no implicit padding
//! and is versioned through [`LAYOUT_VERSION`], which is part of the bpffs pin
//! path: a daemon with a different layout never reuses incompatible maps.
#![no_std]

/// Bumped whenever a map key or value below changes shape or meaning.
pub const LAYOUT_VERSION: u32 = 2;

/// How many cgroup levels below the attach cgroup the kernel programs search
/// for a governing (tagged) ancestor. Deeper cgroups are still governed
/// through their ancestors within this window.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// SO_MARK set by the daemon on its upstream sockets: the second guard (after
/// not living in a governed cgroup) against redirecting the daemon to itself.
pub const MESH_SOCKET_MARK: u32 = 0x6d65_7368; // "mesh"

/// SO_MARK the daemon sets on its listening sockets. connect4/6 redirect only
/// to a LISTEN socket carrying it: setting a mark takes CAP_NET_ADMIN (or
/// CAP_NET_RAW), so an unprivileged process that binds the listen address
/// while the daemon is down receives nothing.
pub const MESH_LISTENER_MARK: u32 = 0x6d65_736c; // "mesl"

/// Longest agent name, in bytes.
pub const AGENT_NAME_MAX: usize = 56;

/// Map names: the ELF symbol names and the pin file names under
/// `<bpffs_dir>/v<LAYOUT_VERSION>/`.
pub mod map_names {
    pub const TAGS: &str = "MESH_TAGS";
    pub const CONFIG: &str = "MESH_CONFIG";
    pub const SOCKS: &str = "MESH_SOCKS";
    pub const PEERS: &str = "MESH_PEERS";
    pub const COUNTERS: &str = "MESH_COUNTERS";
    pub const EVENTS: &str = "MESH_EVENTS";
    pub const CLASSIFIED: &str = "MESH_CLASSIFIED";
    pub const UDP_ALLOW: &str = "MESH_UDP_ALLOW";
    pub const INGRESS: &str = "MESH_INGRESS";
}

/// Program names (the Rust function names in mesh-ebpf).
pub mod program_names {
    pub const CONNECT4: &str = "mesh_connect4";
    pub const CONNECT6: &str = "mesh_connect6";
    pub const SOCK_OPS: &str = "mesh_sock_ops";
    pub const SKB_INGRESS: &str = "mesh_skb_ingress";
    pub const SKB_EGRESS: &str = "mesh_skb_egress";
    pub const SENDMSG4: &str = "mesh_sendmsg4";
    pub const SENDMSG6: &str = "mesh_sendmsg6";
    pub const BIND4: &str = "mesh_bind4";
    pub const BIND6: &str = "mesh_bind6";
    pub const SOCK_CREATE: &str = "mesh_sock_create";
}

/// `CgroupTag::flags` bit: this cgroup (and its subtree) is quarantined.
pub const TAG_QUARANTINED: u32 = 1;
/// `CgroupTag::flags` bit: the whole agent is quarantined; cgroups tagged for
/// the agent later inherit it.
pub const TAG_AGENT_QUARANTINED: u32 = 2;
/// Any of the quarantine bits.
pub const QUARANTINE_MASK: u32 = TAG_QUARANTINED | TAG_AGENT_QUARANTINED;

/// `MESH_CLASSIFIED` value bit: policy selectors may match below this
/// cgroup, so each of its children must be classified (tagged, or given an
/// entry of its own) before its connects are let through; until then the
/// kernel refuses them, so a cgroup a selector will govern has no ungoverned
/// moment. An entry without the bit says the cgroup was seen and is not
/// governed (unless a tag says otherwise).
pub const CLASS_WATCH_CHILDREN: u32 = 1;

/// Value of `MESH_TAGS`, keyed by cgroup id (the cgroup directory's inode).
/// Tagging a cgroup governs its whole subtree; the nearest tagged ancestor
/// names the agent, and any quarantined ancestor quarantines.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CgroupTag {
    pub agent_id: u32,
    pub flags: u32,
    /// The agent's name, NUL padded. Kept in the pinned map so that a
    /// restarted daemon recovers names without any other state.
    pub agent_name: [u8; AGENT_NAME_MAX],
}

impl CgroupTag {
    pub fn quarantined(&self) -> bool {
        self.flags & QUARANTINE_MASK != 0
    }
}

/// An address as the kernel's socket contexts hold it: 16 bytes in network
/// byte order, IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`) so that an AF_INET
/// socket and an AF_INET6 socket talking IPv4 produce the same key.
pub type Ip6Words = [u32; 4];

/// Key of `MESH_PEERS`: the client end of a redirected connection as the
/// daemon sees it in `accept()` (its peer address).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: Ip6Words,
    /// Host byte order.
    pub port: u32,
}

/// Where a governed connection meant to go, and who opened it. Written at
/// connect() (keyed by socket cookie), moved to `MESH_PEERS` at
/// TCP established (keyed by the client's address), read and removed by the
/// daemon at accept().
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Original destination address (network byte order, IPv4 mapped).
    pub addr: Ip6Words,
    /// Original destination port, host byte order.
    pub port: u16,
    /// AF_INET or AF_INET6: the family of the socket that connected.
    pub family: u16,
    pub agent_id: u32,
    /// The cgroup the process runs in.
    pub cgroup_id: u64,
    /// The tagged cgroup that governs it (itself or an ancestor).
    pub governing_cgroup_id: u64,
    pub tgid: u32,
    pub uid: u32,
}

/// Single entry of `MESH_CONFIG`, written by the daemon before attaching.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// The IPv4 listener (network byte order), or 0 when there is none.
    pub listen_v4: u32,
    /// The IPv4 listener's port, host byte order; 0 when there is none.
    pub listen_v4_port: u16,
    /// The IPv6 listener's port, host byte order; 0 when there is none.
    pub listen_v6_port: u16,
    /// The IPv6 listener, network byte order.
    pub listen_v6: Ip6Words,
    /// Cgroup level of the attach cgroup: tags live at or below it.
    pub attach_level: u32,
    /// The daemon's pid: the socket mark exempts only its sockets, so a
    /// governed process that can set marks (CAP_NET_ADMIN) cannot use it to
    /// bypass the mesh.
    pub daemon_tgid: u32,
}

/// Data of a `MESH_UDP_ALLOW` key (an LPM trie): an agent may send UDP to
/// `addr:port`. The prefix length covers `agent_id`, `port` and `_pad`
/// (64 bits, always matched whole) plus the entry's address bits (IPv4
/// entries IPv4-mapped: 96 + their prefix). `port` 0 means any port.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct UdpAllowKey {
    pub agent_id: u32,
    /// Network byte order, so that the key's bytes are in matching order.
    pub port_be: u16,
    pub _pad: u16,
    pub addr: Ip6Words,
}

/// Bits of [`UdpAllowKey`] before the address: always matched whole.
pub const UDP_ALLOW_FIXED_BITS: u32 = 64;

/// Key of `MESH_INGRESS`: an agent may bind `port` (host byte order) on a
/// non-loopback address.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IngressKey {
    pub agent_id: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Value of the per-CPU `MESH_COUNTERS`, keyed by governing cgroup id.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct CgroupCounters {
    /// TCP connect() calls by governed processes.
    pub connects: u64,
    /// Of those, sent to the mesh listener.
    pub redirected: u64,
    /// connect() calls refused in the kernel (quarantine, no listener family).
    pub refused: u64,
    /// Bytes received by governed sockets (IP packet length).
    pub bytes_in: u64,
    /// Bytes sent by governed sockets (IP packet length).
    pub bytes_out: u64,
    /// Packets dropped by quarantine.
    pub packets_dropped: u64,
    /// UDP connects and addressed sends allowed by the policy's udp entries.
    pub udp_allowed: u64,
    /// UDP connects and addressed sends refused (no udp entry, quarantine).
    pub udp_refused: u64,
    /// Sockets refused at creation (raw, ICMP, SCTP: neither TCP nor UDP).
    pub sockets_refused: u64,
    /// Binds refused (a fixed port on a non-loopback address that
    /// `ingress.allow` does not name, or the mesh listen port).
    pub binds_refused: u64,
}

impl CgroupCounters {
    /// Field-wise sum (per-CPU values, retired cgroups).
    pub fn add(&mut self, other: &CgroupCounters) {
        self.connects += other.connects;
        self.redirected += other.redirected;
        self.refused += other.refused;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.packets_dropped += other.packets_dropped;
        self.udp_allowed += other.udp_allowed;
        self.udp_refused += other.udp_refused;
        self.sockets_refused += other.sockets_refused;
        self.binds_refused += other.binds_refused;
    }
}

/// `ConnectEvent::verdict` values.
pub mod verdict {
    pub const REDIRECTED: u32 = 1;
    pub const REFUSED_QUARANTINE: u32 = 2;
    pub const REFUSED_NO_LISTENER: u32 = 3;
    pub const RECORD_FAILED: u32 = 4;
    /// No LISTEN socket with the listener mark at the listen address in the
    /// caller's network namespace: the daemon is down, or something else
    /// holds the address.
    pub const REFUSED_LISTENER_UNVERIFIED: u32 = 5;
    /// UDP to a destination no `udp://` egress entry allows.
    pub const REFUSED_UDP: u32 = 6;
    /// A socket that is neither TCP nor UDP (raw, ICMP, SCTP...).
    pub const REFUSED_SOCKET: u32 = 7;
    /// A bind to a fixed port on a non-loopback address that `ingress.allow`
    /// does not name.
    pub const REFUSED_BIND: u32 = 8;
    /// A bind to the mesh listen port, on any address.
    pub const REFUSED_BIND_LISTEN_PORT: u32 = 9;
}

/// Sent over `MESH_EVENTS` (ring buffer) for socket calls the kernel refused
/// or could not record; redirected connects reach the daemon through
/// accept(). `dst` is the destination (connect, send) or the local address
/// (bind); zero for a refused socket().
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub dst: OrigDst,
    pub verdict: u32,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_RAW... of the socket.
    pub sock_type: u16,
    /// Its IP protocol (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP...).
    pub protocol: u16,
}

/// Stable 32-bit id of an agent name (FNV-1a). Deterministic, so a restarted
/// daemon and the kernel agree without any allocation state; the daemon
/// refuses a tag whose name collides with another agent's id.
pub const fn agent_id(name: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        hash ^= name[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // have no implicit padding (checked by the size asserts below).
    unsafe impl aya::Pod for super::CgroupTag {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::MeshConfig {}
    unsafe impl aya::Pod for super::CgroupCounters {}
    unsafe impl aya::Pod for super::ConnectEvent {}
    unsafe impl aya::Pod for super::UdpAllowKey {}
    unsafe impl aya::Pod for super::IngressKey {}
}

const _: () = {
    assert!(core::mem::size_of::<CgroupTag>() == 64);
    assert!(core::mem::size_of::<PeerKey>() == 20);
    assert!(core::mem::size_of::<OrigDst>() == 48);
    assert!(core::mem::size_of::<MeshConfig>() == 32);
    assert!(core::mem::size_of::<CgroupCounters>() == 80);
    assert!(core::mem::size_of::<ConnectEvent>() == 56);
    assert!(core::mem::size_of::<UdpAllowKey>() == 24);
    assert!(core::mem::size_of::<IngressKey>() == 8);
};
