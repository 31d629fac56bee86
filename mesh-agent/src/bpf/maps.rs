//! Typed handles over the shared maps, behind small traits so that the
//! governance logic (`crate::state`) and the proxy are tested without root.
use std::sync::Mutex;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuHashMap},
    Ebpf,
};
use mesh_common::{
    map_names::{CLASSIFIED, CONFIG, COUNTERS, PEERS, TAGS},
    CgroupCounters, CgroupTag, MeshConfig, OrigDst, PeerKey,
};

use super::BpfError;

/// Tags, quarantine flags and counters: the kernel's view of governance.
pub trait GovernanceMaps: Send + Sync + 'static {
    fn put_tag(&self, cgroup_id: u64, tag: &CgroupTag) -> Result<(), BpfError>;
    fn delete_tag(&self, cgroup_id: u64) -> Result<(), BpfError>;
    fn tags(&self) -> Result<Vec<(u64, CgroupTag)>, BpfError>;
    /// Counters of a governing cgroup, summed over CPUs (zero when absent).
    fn counters(&self, cgroup_id: u64) -> Result<CgroupCounters, BpfError>;
    fn delete_counters(&self, cgroup_id: u64) -> Result<(), BpfError>;
    /// Selector classifications (`MESH_CLASSIFIED`): cgroup id -> `CLASS_*` bits.
    fn put_class(&self, cgroup_id: u64, class: u32) -> Result<(), BpfError>;
    fn delete_class(&self, cgroup_id: u64) -> Result<(), BpfError>;
    fn classes(&self) -> Result<Vec<(u64, u32)>, BpfError>;
}

/// Original destinations recorded by the kernel for accepted connections.
pub trait OrigDstSource: Send + Sync + 'static {
    /// Takes (reads and removes) the record for a client address.
    fn take(&self, peer: &PeerKey) -> Option<OrigDst>;
}

pub struct KernelMaps {
    /// Held, not used: the programs are loaded after the maps are taken, and a
    /// dropped map handle closes the fd they are relocated against.
    _config: Array<MapData, MeshConfig>,
    tags: Mutex<HashMap<MapData, u64, CgroupTag>>,
    peers: Mutex<HashMap<MapData, PeerKey, OrigDst>>,
    counters: Mutex<PerCpuHashMap<MapData, u64, CgroupCounters>>,
    classes: Mutex<HashMap<MapData, u64, u32>>,
}

pub(super) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

/// Deleting an absent key is not an error for us; aya reports it either as
/// `KeyNotFound` or as the syscall's ENOENT, depending on the map type.
fn absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Takes map `name` out of the loaded object as a typed handle.
pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    ebpf.take_map(name)
        .ok_or(BpfError::MissingMap(name))?
        .try_into()
        .map_err(map_err(name))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a map handle cannot leave the kernel map torn.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KernelMaps {
    /// Takes the maps out of the loaded object and writes the config entry.
    pub(super) fn take(ebpf: &mut Ebpf, config: &MeshConfig) -> Result<KernelMaps, BpfError> {
        let mut cfg: Array<MapData, MeshConfig> = take_map(ebpf, CONFIG)?;
        cfg.set(0, config, 0).map_err(map_err(CONFIG))?;
        let tags = take_map(ebpf, TAGS)?;
        let peers = take_map(ebpf, PEERS)?;
        let counters = take_map(ebpf, COUNTERS)?;
        let classes = take_map(ebpf, CLASSIFIED)?;
        Ok(KernelMaps {
            _config: cfg,
            tags: Mutex::new(tags),
            peers: Mutex::new(peers),
            counters: Mutex::new(counters),
            classes: Mutex::new(classes),
        })
    }
}

impl GovernanceMaps for KernelMaps {
    fn put_tag(&self, cgroup_id: u64, tag: &CgroupTag) -> Result<(), BpfError> {
        lock(&self.tags)
            .insert(cgroup_id, tag, 0)
            .map_err(map_err(TAGS))
    }

    fn delete_tag(&self, cgroup_id: u64) -> Result<(), BpfError> {
        match lock(&self.tags).remove(&cgroup_id) {
            Err(e) if !absent(&e) => Err(map_err(TAGS)(e)),
            _ => Ok(()),
        }
    }

    fn tags(&self) -> Result<Vec<(u64, CgroupTag)>, BpfError> {
        lock(&self.tags)
            .iter()
            .map(|r| r.map_err(map_err(TAGS)))
            .collect()
    }

    fn counters(&self, cgroup_id: u64) -> Result<CgroupCounters, BpfError> {
        match lock(&self.counters).get(&cgroup_id, 0) {
            Err(e) if absent(&e) => Ok(CgroupCounters::default()),
            Ok(per_cpu) => Ok(per_cpu
                .iter()
                .fold(CgroupCounters::default(), |mut sum, c| {
                    sum.add(c);
                    sum
                })),
            Err(e) => Err(map_err(COUNTERS)(e)),
        }
    }

    fn delete_counters(&self, cgroup_id: u64) -> Result<(), BpfError> {
        match lock(&self.counters).remove(&cgroup_id) {
            Err(e) if !absent(&e) => Err(map_err(COUNTERS)(e)),
            _ => Ok(()),
        }
    }

    fn put_class(&self, cgroup_id: u64, class: u32) -> Result<(), BpfError> {
        lock(&self.classes)
            .insert(cgroup_id, class, 0)
            .map_err(map_err(CLASSIFIED))
    }

    fn delete_class(&self, cgroup_id: u64) -> Result<(), BpfError> {
        match lock(&self.classes).remove(&cgroup_id) {
            Err(e) if !absent(&e) => Err(map_err(CLASSIFIED)(e)),
            _ => Ok(()),
        }
    }

    fn classes(&self) -> Result<Vec<(u64, u32)>, BpfError> {
        lock(&self.classes)
            .iter()
            .map(|r| r.map_err(map_err(CLASSIFIED)))
            .collect()
    }
}

impl OrigDstSource for KernelMaps {
    fn take(&self, peer: &PeerKey) -> Option<OrigDst> {
        let mut peers = lock(&self.peers);
        let orig = peers.get(peer, 0).ok()?;
        let _ = peers.remove(peer);
        Some(orig)
    }
}

/// In-memory maps for unprivileged tests of the logic above the kernel.
#[derive(Default)]
pub struct MemoryMaps {
    pub tags: Mutex<std::collections::HashMap<u64, CgroupTag>>,
    pub counters: Mutex<std::collections::HashMap<u64, CgroupCounters>>,
    pub peers: Mutex<std::collections::HashMap<PeerKey, OrigDst>>,
    pub classes: Mutex<std::collections::HashMap<u64, u32>>,
}

impl GovernanceMaps for MemoryMaps {
    fn put_tag(&self, cgroup_id: u64, tag: &CgroupTag) -> Result<(), BpfError> {
        lock(&self.tags).insert(cgroup_id, *tag);
        Ok(())
    }
    fn delete_tag(&self, cgroup_id: u64) -> Result<(), BpfError> {
        lock(&self.tags).remove(&cgroup_id);
        Ok(())
    }
    fn tags(&self) -> Result<Vec<(u64, CgroupTag)>, BpfError> {
        Ok(lock(&self.tags).iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn counters(&self, cgroup_id: u64) -> Result<CgroupCounters, BpfError> {
        Ok(lock(&self.counters)
            .get(&cgroup_id)
            .copied()
            .unwrap_or_default())
    }
    fn delete_counters(&self, cgroup_id: u64) -> Result<(), BpfError> {
        lock(&self.counters).remove(&cgroup_id);
        Ok(())
    }
    fn put_class(&self, cgroup_id: u64, class: u32) -> Result<(), BpfError> {
        lock(&self.classes).insert(cgroup_id, class);
        Ok(())
    }
    fn delete_class(&self, cgroup_id: u64) -> Result<(), BpfError> {
        lock(&self.classes).remove(&cgroup_id);
        Ok(())
    }
    fn classes(&self) -> Result<Vec<(u64, u32)>, BpfError> {
        Ok(lock(&self.classes).iter().map(|(k, v)| (*k, *v)).collect())
    }
}

impl OrigDstSource for MemoryMaps {
    fn take(&self, peer: &PeerKey) -> Option<OrigDst> {
        lock(&self.peers).remove(peer)
    }
}
