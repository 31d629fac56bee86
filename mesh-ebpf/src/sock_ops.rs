//! sock_ops: when a redirected connection is established, re-key its original
//! destination by the client's address, which is what the daemon sees in
//! accept(). Runs before the final ACK leaves, so the entry exists before the
//! daemon can accept the connection.
use aya_ebpf::{
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, helpers::generated::bpf_get_socket_cookie,
    macros::sock_ops, programs::SockOpsContext, EbpfContext,
};
use core::ptr::read_volatile;

use mesh_common::PeerKey;

use crate::maps::{MESH_PEERS, MESH_SOCKS};

const AF_INET: u32 = 2;
const V4_MAPPED_MARKER: u32 = u32::from_be(0x0000_ffff);

#[sock_ops]
pub fn mesh_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: sock_ops contexts accept bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let Some(orig) = (unsafe { MESH_SOCKS.get(&cookie) }).copied() else {
        return 1;
    };
    let ops = ctx.ops;
    // Every field is read unconditionally and volatile: the verifier refuses
    // context loads through a computed pointer, which the optimiser produces
    // when each branch loads a different field.
    // SAFETY: ops is the verifier-checked context pointer; all these fields
    // are readable in every sock_ops callback.
    let (family, ip4, ip6, port) = unsafe {
        (
            read_volatile(&(*ops).family),
            read_volatile(&(*ops).local_ip4),
            [
                read_volatile(&(*ops).local_ip6[0]),
                read_volatile(&(*ops).local_ip6[1]),
                read_volatile(&(*ops).local_ip6[2]),
                read_volatile(&(*ops).local_ip6[3]),
            ],
            read_volatile(&(*ops).local_port),
        )
    };
    let addr = if family == AF_INET {
        [0, 0, V4_MAPPED_MARKER, ip4]
    } else {
        ip6
    };
    let key = PeerKey { addr, port };
    let _ = MESH_PEERS.insert(&key, &orig, 0);
    let _ = MESH_SOCKS.remove(&cookie);
    1
}
