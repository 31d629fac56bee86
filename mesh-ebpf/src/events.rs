//! Who made a socket call, and the events the daemon turns into records.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid};
use mesh_common::{ConnectEvent, OrigDst};

use crate::{addr::Dst, governance::Governance, maps::MESH_EVENTS};

/// The address a call names (destination, or local address for bind) and
/// who is calling.
#[inline(always)]
pub fn caller(gov: &Governance, dst: Dst, port: u16, family: u16) -> OrigDst {
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

/// Tells the daemon about a refusal. A full ring drops the event (the
/// counters still count it): the kernel never waits for the daemon.
#[inline(always)]
pub fn emit(dst: OrigDst, why: u32, sock_type: u32, protocol: u32) {
    if let Some(mut entry) = MESH_EVENTS.reserve::<ConnectEvent>(0) {
        entry.write(ConnectEvent {
            dst,
            verdict: why,
            sock_type: sock_type as u16,
            protocol: protocol as u16,
        });
        entry.submit(0);
    }
}
