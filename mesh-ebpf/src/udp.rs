//! UDP egress: a governed process may connect or send a datagram only to an
//! address and port a `udp://` entry of its agent's policy allows. The daemon
//! fills `MESH_UDP_ALLOW` from the policy; the kernel decides each datagram
//! alone (two LPM lookups: the exact port, then "any port").
use aya_ebpf::maps::lpm_trie::Key;
use mesh_common::{verdict, UdpAllowKey, UDP_ALLOW_FIXED_BITS};

use crate::{
    addr::Dst,
    events::{caller, emit},
    governance::{self, Governance},
    maps::MESH_UDP_ALLOW,
};

pub const ALLOW: i32 = 1;
pub const REFUSE: i32 = 0;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_UDP: u32 = 17;

/// Decides one UDP connect or addressed send, counting and reporting it.
#[inline(always)]
pub fn decide(gov: &Governance, dst: Dst, port: u16, family: u16, protocol: u32) -> i32 {
    let allowed = !gov.quarantined && protocol == IPPROTO_UDP && allowed(gov.agent_id, dst, port);
    governance::count(gov.governing_cgroup_id, |c| {
        if allowed {
            c.udp_allowed += 1;
        } else {
            c.udp_refused += 1;
        }
    });
    if allowed {
        return ALLOW;
    }
    let why = if gov.quarantined {
        verdict::REFUSED_QUARANTINE
    } else {
        verdict::REFUSED_UDP
    };
    emit(caller(gov, dst, port, family), why, SOCK_DGRAM, protocol);
    REFUSE
}

#[inline(always)]
fn allowed(agent_id: u32, dst: Dst, port: u16) -> bool {
    let addr = dst.words();
    let exact = Key::new(
        UDP_ALLOW_FIXED_BITS + 128,
        UdpAllowKey {
            agent_id,
            port_be: port.to_be(),
            _pad: 0,
            addr,
        },
    );
    if MESH_UDP_ALLOW.get(&exact).is_some() {
        return true;
    }
    let any_port = Key::new(
        UDP_ALLOW_FIXED_BITS + 128,
        UdpAllowKey {
            agent_id,
            port_be: 0,
            _pad: 0,
            addr,
        },
    );
    MESH_UDP_ALLOW.get(&any_port).is_some()
}
