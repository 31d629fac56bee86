//! The policy in force, swapped whole on reload.
//!
//! Readers take a snapshot (`Arc<PolicySet>`) once per connection or request
//! and decide everything about it from that snapshot: a reload never changes
//! the rules under a call in flight, and no reader ever sees half of one
//! policy and half of another. The swap itself is a pointer store
//! (arc-swap): readers never wait for a reload, nor a reload for readers.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use arc_swap::ArcSwap;

use super::PolicySet;

pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    /// Bumped by every successful swap; 1 for the policy loaded at start.
    generation: AtomicU64,
}

impl PolicyStore {
    pub fn new(initial: PolicySet) -> PolicyStore {
        PolicyStore {
            current: ArcSwap::from_pointee(initial),
            generation: AtomicU64::new(1),
        }
    }

    /// The policy in force now; keep it for the whole call.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Puts `next` in force for every snapshot taken from now on; returns
    /// its generation.
    pub fn replace(&self, next: PolicySet) -> u64 {
        self.current.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_outlives_a_replace() {
        let store = PolicyStore::new(PolicySet::empty());
        let before = store.snapshot();
        let next = PolicySet::from_files(&[(
            "a.yaml".into(),
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n".into(),
        )])
        .unwrap();
        assert_eq!(store.replace(next), 2);
        assert!(!before.has_agent("a"));
        assert!(store.snapshot().has_agent("a"));
        assert_eq!(store.generation(), 2);
    }
}
