//! mesh kernel programs. One file per program type; each has its user-space
//! handle in `mesh-agent/src/bpf/` under the same name.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod addr;
#[cfg(target_arch = "bpf")]
mod bind;
#[cfg(target_arch = "bpf")]
mod cgroup_skb;
#[cfg(target_arch = "bpf")]
mod connect;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod governance;
#[cfg(target_arch = "bpf")]
mod listener;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sendmsg;
#[cfg(target_arch = "bpf")]
mod sock_create;
#[cfg(target_arch = "bpf")]
mod sock_ops;
#[cfg(target_arch = "bpf")]
mod udp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
