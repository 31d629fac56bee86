//! cgroup/connect4 and cgroup/connect6: send governed TCP connects to the mesh
//! listener, remembering where they meant to go and who asked; decide UDP
//! connects against the policy's udp entries; refuse every other socket.
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::bpf_get_current_pid_tgid,
    helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
    EbpfContext,
};
use aya_log_ebpf::debug;
use mesh_common::{verdict, MeshConfig, MESH_SOCKET_MARK};

use crate::{
    addr::{read4, read6, Dst, AF_INET, AF_INET6, V4_MAPPED_MARKER},
    events::{caller, emit},
    governance::{self, Governance},
    listener,
    maps::{MESH_CONFIG, MESH_SOCKS},
    udp,
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0; // connect() fails with EPERM
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    let (dst, port) = read4(ctx.sock_addr);
    decide(&ctx, ctx.sock_addr, dst, port, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    let (dst, port) = read6(ctx.sock_addr);
    decide(&ctx, ctx.sock_addr, dst, port, AF_INET6)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, sa: *mut bpf_sock_addr, dst: Dst, port: u16, family: u16) -> i32 {
    let Some(gov) = governance::current() else {
        return ALLOW;
    };
    // SAFETY: context fields, read once.
    let (sock_type, protocol, sk) =
        unsafe { ((*sa).type_, (*sa).protocol, (*sa).__bindgen_anon_1.sk) };
    if sock_type == SOCK_DGRAM {
        // Quarantine included: udp::decide refuses and reports it.
        return udp::decide(&gov, dst, port, family, protocol);
    }
    if gov.quarantined {
        count_connect(&gov, false);
        emit(
            caller(&gov, dst, port, family),
            verdict::REFUSED_QUARANTINE,
            sock_type,
            protocol,
        );
        debug!(
            ctx,
            "mesh: refused connect of quarantined cgroup {}", gov.governing_cgroup_id
        );
        return REFUSE;
    }
    if sock_type != SOCK_STREAM || protocol != IPPROTO_TCP {
        // Raw, SCTP, MPTCP...: sock_create refuses them, but a socket made
        // before its cgroup was governed can still try.
        count_connect(&gov, false);
        emit(
            caller(&gov, dst, port, family),
            verdict::REFUSED_SOCKET,
            sock_type,
            protocol,
        );
        return REFUSE;
    }
    let refuse = |why: u32| {
        count_connect(&gov, false);
        emit(caller(&gov, dst, port, family), why, sock_type, protocol);
        REFUSE
    };
    let Some(cfg) = MESH_CONFIG.get(0) else {
        return refuse(verdict::REFUSED_NO_LISTENER);
    };
    if !sk.is_null() {
        // SAFETY: sk is a PTR_TO_SOCKET the verifier lets us read.
        let mark = unsafe { (*sk).mark };
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if mark == MESH_SOCKET_MARK && tgid == cfg.daemon_tgid {
            return ALLOW;
        }
    }
    if !listener::verified(ctx, cfg, dst) {
        // The daemon is down (or another socket holds its address): refused,
        // never delivered to whoever listens there now.
        return refuse(if has_listener(cfg, dst) {
            verdict::REFUSED_LISTENER_UNVERIFIED
        } else {
            verdict::REFUSED_NO_LISTENER
        });
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
        return refuse(verdict::RECORD_FAILED);
    }
    redirect(sa, cfg, dst);
    count_connect(&gov, true);
    ALLOW
}

/// Rewrites the destination to the listener of `dst`'s family (which
/// `listener::verified` found).
#[inline(always)]
fn redirect(sa: *mut bpf_sock_addr, cfg: &MeshConfig, dst: Dst) {
    match dst {
        Dst::V4(_) => {
            // SAFETY: writable context fields of connect4.
            unsafe {
                (*sa).user_ip4 = cfg.listen_v4;
                (*sa).user_port = u32::from(cfg.listen_v4_port.to_be());
            }
        }
        Dst::V4Mapped(_) => {
            // Keep IPv4 semantics for the dual-stack socket: ::ffff:<v4 listener>.
            // SAFETY: writable context fields of connect6.
            unsafe {
                (*sa).user_ip6[0] = 0;
                (*sa).user_ip6[1] = 0;
                (*sa).user_ip6[2] = V4_MAPPED_MARKER;
                (*sa).user_ip6[3] = cfg.listen_v4;
                (*sa).user_port = u32::from(cfg.listen_v4_port.to_be());
            }
        }
        Dst::V6(_) => {
            // SAFETY: writable context fields of connect6.
            unsafe {
                (*sa).user_ip6[0] = cfg.listen_v6[0];
                (*sa).user_ip6[1] = cfg.listen_v6[1];
                (*sa).user_ip6[2] = cfg.listen_v6[2];
                (*sa).user_ip6[3] = cfg.listen_v6[3];
                (*sa).user_port = u32::from(cfg.listen_v6_port.to_be());
            }
        }
    }
}

/// Whether the daemon is configured with a listener for `dst`'s family.
#[inline(always)]
fn has_listener(cfg: &MeshConfig, dst: Dst) -> bool {
    match dst {
        Dst::V4(_) | Dst::V4Mapped(_) => cfg.listen_v4_port != 0,
        Dst::V6(_) => cfg.listen_v6_port != 0,
    }
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
