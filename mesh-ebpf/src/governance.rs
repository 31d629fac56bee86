//! Is the current socket's cgroup governed, and by which tag?
use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_skb_ancestor_cgroup_id,
};
use mesh_common::{CgroupCounters, CLASS_WATCH_CHILDREN, MAX_CGROUP_DEPTH, QUARANTINE_MASK};

use crate::maps::{MESH_CLASSIFIED, MESH_CONFIG, MESH_COUNTERS, MESH_TAGS};

/// The nearest tagged ancestor (or the cgroup itself) and whether any tagged
/// ancestor is quarantined.
#[derive(Copy, Clone)]
pub struct Governance {
    pub governing_cgroup_id: u64,
    pub agent_id: u32,
    pub quarantined: bool,
}

/// Marks a `MESH_CLASSIFIED` entry as present in [`resolve`]'s local copy.
const PRESENT: u32 = 1 << 31;

#[inline(always)]
fn attach_level() -> u32 {
    match MESH_CONFIG.get(0) {
        Some(cfg) => cfg.attach_level,
        None => 0,
    }
}

/// Walks the cgroup ancestry from the attach level down, with `ancestor`
/// giving the id at a level (0 past the cgroup's own level).
///
/// A cgroup that policy selectors have not classified yet (a child of a
/// watched cgroup with neither a tag nor a classification) is treated as
/// quarantined: refused, never let through ungoverned, until the daemon
/// tags or classifies it.
#[inline(always)]
fn resolve(ancestor: impl Fn(i32) -> u64) -> Option<Governance> {
    let start = attach_level();
    let mut found: Option<Governance> = None;
    let mut quarantined = false;
    let mut unclassified: u64 = 0;
    let mut parent_watched = false;
    let mut i: u32 = 0;
    while i < MAX_CGROUP_DEPTH {
        let id = ancestor((start + i) as i32);
        if id == 0 {
            break;
        }
        // SAFETY: the values are only read, and copied out at once.
        let tag = unsafe { MESH_TAGS.get(&id) };
        // As one integer (PRESENT marks an entry): an Option here compiles
        // to a read of an unset register, which the verifier rejects.
        let class: u32 = match unsafe { MESH_CLASSIFIED.get(&id) } {
            Some(bits) => *bits | PRESENT,
            None => 0,
        };
        if let Some(tag) = tag {
            quarantined |= tag.flags & QUARANTINE_MASK != 0;
            found = Some(Governance {
                governing_cgroup_id: id,
                agent_id: tag.agent_id,
                quarantined: false,
            });
        } else if parent_watched && class == 0 && unclassified == 0 {
            unclassified = id;
        }
        parent_watched = class & CLASS_WATCH_CHILDREN != 0;
        i += 1;
    }
    match found {
        Some(g) => Some(Governance {
            quarantined: quarantined || unclassified != 0,
            ..g
        }),
        None if unclassified != 0 => Some(Governance {
            governing_cgroup_id: unclassified,
            agent_id: 0,
            quarantined: true,
        }),
        None => None,
    }
}

/// Governance of the task calling into a socket syscall.
#[inline(always)]
pub fn current() -> Option<Governance> {
    // SAFETY: the helper takes a level and returns an id, no pointers.
    resolve(|level| unsafe { bpf_get_current_ancestor_cgroup_id(level) })
}

/// Governance of the socket that owns `skb`.
#[inline(always)]
pub fn of_skb(skb: *mut __sk_buff) -> Option<Governance> {
    // SAFETY: skb is the program's context pointer.
    resolve(|level| unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) })
}

/// Applies `update` to this CPU's counters of a governing cgroup, creating
/// them on first use.
#[inline(always)]
pub fn count(governing_cgroup_id: u64, update: impl Fn(&mut CgroupCounters)) {
    let mut ptr = MESH_COUNTERS.get_ptr_mut(&governing_cgroup_id);
    if ptr.is_none() {
        let _ = MESH_COUNTERS.insert(&governing_cgroup_id, &CgroupCounters::default(), 0);
        ptr = MESH_COUNTERS.get_ptr_mut(&governing_cgroup_id);
    }
    if let Some(ptr) = ptr {
        // SAFETY: per-CPU value; nothing else runs on this CPU's copy now.
        update(unsafe { &mut *ptr });
    }
}
