//! cgroup/sendmsg4 and sendmsg6: a datagram sent with an explicit address
//! (an unconnected UDP socket, or one that names another destination) is
//! decided like a UDP connect. Datagrams on a connected socket were decided
//! at connect, and quarantine drops them in cgroup_skb.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::{
    addr::{read4, read6, Dst, AF_INET, AF_INET6},
    governance, udp,
};

#[cgroup_sock_addr(sendmsg4)]
pub fn mesh_sendmsg4(ctx: SockAddrContext) -> i32 {
    let (dst, port) = read4(ctx.sock_addr);
    decide(&ctx, dst, port, AF_INET)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn mesh_sendmsg6(ctx: SockAddrContext) -> i32 {
    let (dst, port) = read6(ctx.sock_addr);
    decide(&ctx, dst, port, AF_INET6)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, dst: Dst, port: u16, family: u16) -> i32 {
    let Some(gov) = governance::current() else {
        return udp::ALLOW;
    };
    // SAFETY: a context field, read once.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    udp::decide(&gov, dst, port, family, protocol)
}
