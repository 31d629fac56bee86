//! Is the mesh listener really there? Before redirecting a connect, look the
//! listen address up in the caller's network namespace and accept only a
//! LISTEN socket carrying the daemon's listener mark. While the daemon is
//! down the address is free: whoever binds it next (without the mark, which
//! takes CAP_NET_ADMIN to set) receives nothing, and the connect is refused.
//! One socket-table lookup per governed TCP connect.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN},
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_release},
    programs::SockAddrContext,
    EbpfContext,
};
use mesh_common::{MeshConfig, MESH_LISTENER_MARK};

use crate::addr::Dst;

/// Whether the listener a connect to `dst` would be redirected to is the
/// daemon's (false when that family has no listener).
#[inline(always)]
pub fn verified(ctx: &SockAddrContext, cfg: &MeshConfig, dst: Dst) -> bool {
    // SAFETY: plain data, every byte written below or zero.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = match dst {
        Dst::V4(_) | Dst::V4Mapped(_) => {
            if cfg.listen_v4_port == 0 {
                return false;
            }
            tuple.__bindgen_anon_1.ipv4.daddr = cfg.listen_v4;
            tuple.__bindgen_anon_1.ipv4.dport = cfg.listen_v4_port.to_be();
            core::mem::size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
        }
        Dst::V6(_) => {
            if cfg.listen_v6_port == 0 {
                return false;
            }
            tuple.__bindgen_anon_1.ipv6.daddr = cfg.listen_v6;
            tuple.__bindgen_anon_1.ipv6.dport = cfg.listen_v6_port.to_be();
            core::mem::size_of::<aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
        }
    };
    // SAFETY: sock_addr programs may look sockets up; the tuple lives on
    // the stack for the call; a socket found is released below on every path.
    let sk = unsafe {
        bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a full socket returned by the lookup; mark and state are
    // readable on it.
    let (mark, state) = unsafe { ((*sk).mark, (*sk).state) };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    mark == MESH_LISTENER_MARK && state == BPF_TCP_LISTEN
}
