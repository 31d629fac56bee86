//! cgroup/sock_create: a governed process gets TCP and UDP sockets only.
//! Raw and ICMP (ping) sockets, SCTP, MPTCP, UDP-Lite would carry traffic
//! that connect4/6 and sendmsg4/6 do not decide, so they are refused
//! (socket() fails with EPERM). Only inet sockets reach this hook.
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};
use mesh_common::verdict;

use crate::{
    addr::Dst,
    events::{caller, emit},
    governance,
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

#[cgroup_sock(sock_create)]
pub fn mesh_sock_create(ctx: SockContext) -> i32 {
    let Some(gov) = governance::current() else {
        return ALLOW;
    };
    // SAFETY: fields of the verifier-checked context, read once.
    let (family, sock_type, protocol) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    let tcp = sock_type == SOCK_STREAM && protocol == IPPROTO_TCP;
    let udp = sock_type == SOCK_DGRAM && protocol == IPPROTO_UDP;
    if tcp || udp {
        return ALLOW;
    }
    governance::count(gov.governing_cgroup_id, |c| c.sockets_refused += 1);
    emit(
        caller(&gov, Dst::V6([0; 4]), 0, family as u16),
        verdict::REFUSED_SOCKET,
        sock_type,
        protocol,
    );
    REFUSE
}
