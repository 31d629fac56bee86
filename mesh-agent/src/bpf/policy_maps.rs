//! The policy the kernel enforces without asking the daemon: where each
//! agent may send UDP (`MESH_UDP_ALLOW`, from the `udp://` egress entries)
//! and which fixed ports it may bind on non-loopback addresses
//! (`MESH_INGRESS`, from `ingress.allow`). Keyed by agent id, so a cgroup
//! tagged later is covered at once; written from the policy in force at
//! start and after every reload.
use std::{collections::HashSet, sync::Mutex};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, MapData,
    },
    Ebpf,
};
use mesh_common::{
    agent_id,
    map_names::{INGRESS, UDP_ALLOW},
    IngressKey, UdpAllowKey, UDP_ALLOW_FIXED_BITS,
};

use super::{
    maps::{lock, map_err, take_map},
    BpfError,
};
use crate::{addr::ip6_words, policy::PolicySet};

/// A `MESH_UDP_ALLOW` key: prefix length and data.
pub type UdpEntry = (u32, UdpAllowKey);

/// What the maps should hold for `policies`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelPolicy {
    pub udp: HashSet<UdpEntry>,
    pub ingress: HashSet<IngressKey>,
}

impl KernelPolicy {
    pub fn of(policies: &PolicySet) -> KernelPolicy {
        let mut out = KernelPolicy::default();
        for agent in policies.agents() {
            let id = agent_id(agent.as_bytes());
            for allow in policies.udp_allow(agent) {
                out.udp.insert((
                    UDP_ALLOW_FIXED_BITS + u32::from(allow.prefix_len),
                    UdpAllowKey {
                        agent_id: id,
                        port_be: allow.port.unwrap_or(0).to_be(),
                        _pad: 0,
                        addr: ip6_words(allow.addr),
                    },
                ));
            }
            for &port in policies.ingress_ports(agent) {
                out.ingress.insert(IngressKey {
                    agent_id: id,
                    port,
                    _pad: 0,
                });
            }
        }
        out
    }
}

pub struct PolicyMaps {
    udp: Mutex<LpmTrie<MapData, UdpAllowKey, u32>>,
    ingress: Mutex<HashMap<MapData, IngressKey, u32>>,
}

impl PolicyMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<PolicyMaps, BpfError> {
        Ok(PolicyMaps {
            udp: Mutex::new(take_map(ebpf, UDP_ALLOW)?),
            ingress: Mutex::new(take_map(ebpf, INGRESS)?),
        })
    }

    /// Makes the maps hold exactly `want`: new entries first, then the
    /// stale ones removed, so an entry in both policies never blinks out.
    pub fn apply(&self, want: &KernelPolicy) -> Result<(), BpfError> {
        let mut udp = lock(&self.udp);
        for (prefix, data) in &want.udp {
            udp.insert(&Key::new(*prefix, *data), 1, 0)
                .map_err(map_err(UDP_ALLOW))?;
        }
        let stale: Vec<Key<UdpAllowKey>> = udp
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.udp.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            udp.remove(&key).map_err(map_err(UDP_ALLOW))?;
        }
        drop(udp);
        let mut ingress = lock(&self.ingress);
        for key in &want.ingress {
            ingress.insert(key, 1, 0).map_err(map_err(INGRESS))?;
        }
        let stale: Vec<IngressKey> = ingress
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.ingress.contains(k))
            .collect();
        for key in stale {
            ingress.remove(&key).map_err(map_err(INGRESS))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_entries_and_ingress_ports_become_keys_per_agent() {
        let text = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: bot\n\
                    egress:\n  allow: [\"udp://127.0.0.53:53\", \"udp://10.0.0.0/8\", \"127.0.0.1:80\"]\n\
                    ingress:\n  allow: [8080]\n";
        let set = PolicySet::from_files(&[("p.yaml".into(), text.into())]).unwrap();
        let want = KernelPolicy::of(&set);
        let id = agent_id(b"bot");
        let mapped = |a: [u8; 4]| ip6_words(std::net::Ipv4Addr::from(a).to_ipv6_mapped());
        assert_eq!(
            want.udp,
            HashSet::from([
                (
                    64 + 128,
                    UdpAllowKey {
                        agent_id: id,
                        port_be: 53u16.to_be(),
                        _pad: 0,
                        addr: mapped([127, 0, 0, 53]),
                    }
                ),
                (
                    64 + 104,
                    UdpAllowKey {
                        agent_id: id,
                        port_be: 0,
                        _pad: 0,
                        addr: mapped([10, 0, 0, 0]),
                    }
                ),
            ])
        );
        assert_eq!(
            want.ingress,
            HashSet::from([IngressKey {
                agent_id: id,
                port: 8080,
                _pad: 0
            }])
        );
        assert_eq!(
            KernelPolicy::of(&PolicySet::empty()),
            KernelPolicy::default()
        );
    }
}
