//! cgroup/bind4 and bind6: inbound. A governed process may bind port 0 (an
//! ephemeral port, as outgoing sockets do) and any port on a loopback
//! address; a fixed port on any other address (wildcard included) only when
//! its agent's `ingress.allow` names it. The mesh listen port is refused on
//! every address, so that no governed process can stand in for the daemon.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use mesh_common::{verdict, IngressKey};

use crate::{
    addr::{read4, read6, Dst, AF_INET, AF_INET6},
    events::{caller, emit},
    governance,
    maps::{MESH_CONFIG, MESH_INGRESS},
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0; // bind() fails with EPERM

#[cgroup_sock_addr(bind4)]
pub fn mesh_bind4(ctx: SockAddrContext) -> i32 {
    let (addr, port) = read4(ctx.sock_addr);
    decide(&ctx, addr, port, AF_INET)
}

#[cgroup_sock_addr(bind6)]
pub fn mesh_bind6(ctx: SockAddrContext) -> i32 {
    let (addr, port) = read6(ctx.sock_addr);
    decide(&ctx, addr, port, AF_INET6)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, addr: Dst, port: u16, family: u16) -> i32 {
    if port == 0 {
        return ALLOW;
    }
    let Some(gov) = governance::current() else {
        return ALLOW;
    };
    let listen_port = match MESH_CONFIG.get(0) {
        Some(cfg) => port == cfg.listen_v4_port || port == cfg.listen_v6_port,
        None => false,
    };
    let why = if listen_port {
        verdict::REFUSED_BIND_LISTEN_PORT
    } else if addr.is_loopback() {
        return ALLOW;
    } else {
        let key = IngressKey {
            agent_id: gov.agent_id,
            port,
            _pad: 0,
        };
        // SAFETY: the value is not read.
        if unsafe { MESH_INGRESS.get(&key) }.is_some() {
            return ALLOW;
        }
        verdict::REFUSED_BIND
    };
    governance::count(gov.governing_cgroup_id, |c| c.binds_refused += 1);
    // SAFETY: context fields, read once.
    let (sock_type, protocol) = unsafe { ((*ctx.sock_addr).type_, (*ctx.sock_addr).protocol) };
    emit(caller(&gov, addr, port, family), why, sock_type, protocol);
    REFUSE
}
