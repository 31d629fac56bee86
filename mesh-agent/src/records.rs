//! Connection records: one per governed connection (forwarded or refused).
//! Kept in a bounded in-memory ring for `meshctl audit tail` and logged as
//! structured events; the hash-chained audit log (a later issue) persists them.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// How the mesh handled a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Carried to the original destination.
    Forwarded,
    /// Refused by policy (egress) in the daemon: the connection was closed.
    RefusedPolicy,
    /// Refused in the kernel (quarantine, no listener for the family).
    RefusedKernel,
    /// Accepted, but the kernel had no record of where it meant to go.
    NoOriginalDestination,
    /// Allowed, but the upstream connect failed.
    UpstreamFailed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub id: u64,
    pub start_unix_ms: u64,
    pub agent: Option<String>,
    pub cgroup_id: u64,
    pub governing_cgroup_id: u64,
    pub pid: u32,
    pub uid: u32,
    pub client: Option<String>,
    pub original_destination: Option<String>,
    pub verdict: Verdict,
    /// The rule that decided, when one did.
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
    pub duration_ms: u64,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bounded ring of the most recent records.
pub struct RecordLog {
    ring: Mutex<VecDeque<ConnectionRecord>>,
    capacity: usize,
    next_id: AtomicU64,
}

impl RecordLog {
    pub fn new(capacity: usize) -> RecordLog {
        RecordLog {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn push(&self, record: ConnectionRecord) {
        tracing::info!(
            record.id = record.id,
            agent = record.agent.as_deref().unwrap_or("-"),
            cgroup_id = record.cgroup_id,
            pid = record.pid,
            uid = record.uid,
            client = record.client.as_deref().unwrap_or("-"),
            orig_dst = record.original_destination.as_deref().unwrap_or("-"),
            verdict = ?record.verdict,
            rule = record.rule.as_deref().unwrap_or("-"),
            reason = record.reason.as_deref().unwrap_or("-"),
            bytes_up = record.bytes_to_upstream,
            bytes_down = record.bytes_to_client,
            duration_ms = record.duration_ms,
            "connection"
        );
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The newest `n` records, oldest first.
    pub fn tail(&self, n: usize) -> Vec<ConnectionRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let skip = ring.len().saturating_sub(n);
        ring.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> ConnectionRecord {
        ConnectionRecord {
            id,
            start_unix_ms: 0,
            agent: None,
            cgroup_id: 0,
            governing_cgroup_id: 0,
            pid: 0,
            uid: 0,
            client: None,
            original_destination: None,
            verdict: Verdict::Forwarded,
            rule: None,
            reason: None,
            bytes_to_upstream: 0,
            bytes_to_client: 0,
            duration_ms: 0,
        }
    }

    #[test]
    fn ring_keeps_the_newest() {
        let log = RecordLog::new(3);
        for i in 0..5 {
            log.push(rec(i));
        }
        let ids: Vec<u64> = log.tail(10).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 3, 4]);
        let ids: Vec<u64> = log.tail(2).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![3, 4]);
    }
}
