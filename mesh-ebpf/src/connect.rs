//! cgroup/connect4 and cgroup/connect6: send governed TCP connects to the mesh
//! listener, remembering where they meant to go and who asked.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated::bpf_get_socket_cookie,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use aya_log_ebpf::debug;
use mesh_common::{verdict, ConnectEvent, Ip6Words, MeshConfig, OrigDst, MESH_SOCKET_MARK};

use crate::{
    governance::{self, Governance},
    maps::{MESH_CONFIG, MESH_EVENTS, MESH_SOCKS},
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0; // connect() fails with EPERM
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
/// `::ffff:0:0/96` marker word, network byte order.
const V4_MAPPED_MARKER: u32 = u32::from_be(0x0000_ffff);

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx.sock_addr is the verifier-checked context pointer.
    let (ip4, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    decide(&ctx, sa, Dst::V4(ip4), ntohs_ctx(port), AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as above; the four words are read one by one (the verifier
    // accepts only 4-byte loads of user_ip6).
    let (ip6, port) = unsafe {
        (
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            (*sa).user_port,
        )
    };
    let dst = if ip6[0] == 0 && ip6[1] == 0 && ip6[2] == V4_MAPPED_MARKER {
        Dst::V4Mapped(ip6[3])
    } else {
        Dst::V6(ip6)
    };
    decide(&ctx, sa, dst, ntohs_ctx(port), AF_INET6)
}

#[derive(Copy, Clone)]
enum Dst {
    V4(u32),
    /// An IPv4 destination reached through an AF_INET6 socket.
    V4Mapped(u32),
    V6(Ip6Words),
}

impl Dst {
    fn words(self) -> Ip6Words {
        match self {
            Dst::V4(a) | Dst::V4Mapped(a) => [0, 0, V4_MAPPED_MARKER, a],
            Dst::V6(w) => w,
        }
    }
}

/// `user_port` holds the port in network byte order in its low 16 bits.
#[inline(always)]
fn ntohs_ctx(port: u32) -> u16 {
    u16::from_be(port as u16)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, sa: *mut bpf_sock_addr, dst: Dst, port: u16, family: u16) -> i32 {
    let Some(gov) = governance::current() else {
        return ALLOW;
    };
    // SAFETY: context fields, read once.
    let (sock_type, sk) = unsafe { ((*sa).type_, (*sa).__bindgen_anon_1.sk) };
    if gov.quarantined {
        count_connect(&gov, false);
        emit(&gov, dst, port, family, verdict::REFUSED_QUARANTINE);
        debug!(
            ctx,
            "mesh: refused connect of quarantined cgroup {}", gov.governing_cgroup_id
        );
        return REFUSE;
    }
    if sock_type != SOCK_STREAM {
        // Only TCP is carried through the mesh; datagrams are not redirected
        // or governed here (quarantine still drops them in cgroup_skb).
        return ALLOW;
    }
    let Some(cfg) = MESH_CONFIG.get(0) else {
        count_connect(&gov, false);
        emit(&gov, dst, port, family, verdict::REFUSED_NO_LISTENER);
        return REFUSE;
    };
    if !sk.is_null() {
        // SAFETY: sk is a PTR_TO_SOCKET the verifier lets us read.
        let mark = unsafe { (*sk).mark };
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if mark == MESH_SOCKET_MARK && tgid == cfg.daemon_tgid {
            return ALLOW;
        }
    }
    if is_listener(cfg, dst, port) {
        // Talking to the mesh listener itself: never record it, or the daemon
        // would dial itself. The daemon closes connections it has no record of.
        return ALLOW;
    }
    // SAFETY: sock_addr contexts accept bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let orig = caller(&gov, dst, port, family);
    if MESH_SOCKS.insert(&cookie, &orig, 0).is_err() {
        // Fail closed: without a record the daemon could not route it.
        count_connect(&gov, false);
        emit(&gov, dst, port, family, verdict::RECORD_FAILED);
        return REFUSE;
    }
    let redirected = match dst {
        Dst::V4(_) if cfg.listen_v4_port != 0 => {
            // SAFETY: writable context fields of connect4.
            unsafe {
                (*sa).user_ip4 = cfg.listen_v4;
                (*sa).user_port = u32::from(cfg.listen_v4_port.to_be());
            }
            true
        }
        Dst::V4Mapped(_) if cfg.listen_v4_port != 0 => {
            // Keep IPv4 semantics for the dual-stack socket: ::ffff:<v4 listener>.
            // SAFETY: writable context fields of connect6.
            unsafe {
                (*sa).user_ip6[0] = 0;
                (*sa).user_ip6[1] = 0;
                (*sa).user_ip6[2] = V4_MAPPED_MARKER;
                (*sa).user_ip6[3] = cfg.listen_v4;
                (*sa).user_port = u32::from(cfg.listen_v4_port.to_be());
            }
            true
        }
        Dst::V6(_) if cfg.listen_v6_port != 0 => {
            // SAFETY: writable context fields of connect6.
            unsafe {
                (*sa).user_ip6[0] = cfg.listen_v6[0];
                (*sa).user_ip6[1] = cfg.listen_v6[1];
                (*sa).user_ip6[2] = cfg.listen_v6[2];
                (*sa).user_ip6[3] = cfg.listen_v6[3];
                (*sa).user_port = u32::from(cfg.listen_v6_port.to_be());
            }
            true
        }
        _ => false,
    };
    if !redirected {
        let _ = MESH_SOCKS.remove(&cookie);
        count_connect(&gov, false);
        emit(&gov, dst, port, family, verdict::REFUSED_NO_LISTENER);
        return REFUSE;
    }
    count_connect(&gov, true);
    ALLOW
}

#[inline(always)]
fn is_listener(cfg: &MeshConfig, dst: Dst, port: u16) -> bool {
    match dst {
        Dst::V4(a) | Dst::V4Mapped(a) => cfg.listen_v4_port == port && cfg.listen_v4 == a,
        Dst::V6(w) => {
            cfg.listen_v6_port == port
                && cfg.listen_v6[0] == w[0]
                && cfg.listen_v6[1] == w[1]
                && cfg.listen_v6[2] == w[2]
                && cfg.listen_v6[3] == w[3]
        }
    }
}

#[inline(always)]
fn count_connect(gov: &Governance, redirected: bool) {
    governance::count(gov.governing_cgroup_id, |c| {
        c.connects += 1;
        if redirected {
            c.redirected += 1;
        } else {
            c.refused += 1;
        }
    });
}

/// The original destination and who is connecting to it.
#[inline(always)]
fn caller(gov: &Governance, dst: Dst, port: u16, family: u16) -> OrigDst {
    let pid_tgid = bpf_get_current_pid_tgid();
    OrigDst {
        addr: dst.words(),
        port,
        family,
        agent_id: gov.agent_id,
        // SAFETY: no arguments.
        cgroup_id: unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() },
        governing_cgroup_id: gov.governing_cgroup_id,
        tgid: (pid_tgid >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
    }
}

#[inline(always)]
fn emit(gov: &Governance, dst: Dst, port: u16, family: u16, why: u32) {
    if let Some(mut entry) = MESH_EVENTS.reserve::<ConnectEvent>(0) {
        entry.write(ConnectEvent {
            dst: caller(gov, dst, port, family),
            verdict: why,
            _pad: 0,
        });
        entry.submit(0);
    }
}
