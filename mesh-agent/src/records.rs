//! Records: one per governed connection (forwarded or refused) and, for
//! HTTP, one per request with what the request said (`call`).
//! Kept in a bounded in-memory ring for `meshctl audit tail` and logged as
//! structured events; nothing persists them yet.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{RECORD_ARGUMENTS_MAX_BYTES, RECORD_RING_MAX_BYTES, RECORD_TEXT_MAX_BYTES},
    l7::{Direction, Protocol, RpcId},
};

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
    /// A request that could not be parsed where its parse decides policy;
    /// answered with a protocol error, never forwarded.
    Malformed,
    /// A call that needs a human's approval; answered as a refusal that says
    /// so until approvals exist.
    Held,
    /// Not a connection: the agent was quarantined (a `quarantine.triggers`
    /// entry tripped); the rule names the trigger, the reason the refusals.
    Quarantined,
}

/// Sees every record as it is kept, and may answer with one record of its
/// own to keep after it (which is not observed again).
pub trait RecordObserver: Send + Sync {
    fn observe(&self, record: &ConnectionRecord) -> Option<ConnectionRecord>;
}

/// Who is calling, as the kernel told the daemon (never anything the agent
/// sends).
#[derive(Clone, Debug)]
pub struct Identity {
    pub agent: Option<Arc<str>>,
    pub cgroup_id: u64,
    pub governing_cgroup_id: u64,
    pub pid: u32,
    pub uid: u32,
}

impl Identity {
    /// From the kernel's record of a connect; `agent` is its tag's name.
    pub fn from_kernel(kernel: &mesh_common::OrigDst, agent: Option<Arc<str>>) -> Identity {
        Identity {
            agent,
            cgroup_id: kernel.cgroup_id,
            governing_cgroup_id: kernel.governing_cgroup_id,
            pid: kernel.tgid,
            uid: kernel.uid,
        }
    }
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
    /// What was spoken: absent for opaque TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The TLS SNI or HTTP Host the agent used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// For a request record: the call and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallSummary>,
}

impl ConnectionRecord {
    /// Where every record starts: who (`identity`, absent when the kernel
    /// had none), what was decided and by which rule. Callers add what else
    /// they know with struct update syntax.
    pub fn new(
        id: u64,
        start_unix_ms: u64,
        identity: Option<&Identity>,
        verdict: Verdict,
        rule: String,
    ) -> ConnectionRecord {
        ConnectionRecord {
            id,
            start_unix_ms,
            agent: identity.and_then(|i| i.agent.as_deref()).map(str::to_owned),
            cgroup_id: identity.map_or(0, |i| i.cgroup_id),
            governing_cgroup_id: identity.map_or(0, |i| i.governing_cgroup_id),
            pid: identity.map_or(0, |i| i.pid),
            uid: identity.map_or(0, |i| i.uid),
            client: None,
            original_destination: None,
            verdict,
            rule: Some(rule),
            reason: None,
            bytes_to_upstream: 0,
            bytes_to_client: 0,
            duration_ms: 0,
            protocol: None,
            server_name: None,
            call: None,
        }
    }
}

/// One L7 call and its outcome, as the audit keeps it: a stable, flat schema
/// independent of the parsers' types.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    pub direction: Option<Direction>,
    /// HTTP method and path of the request.
    pub http_method: String,
    pub path: String,
    /// JSON-RPC method, LLM API or HTTP method.
    pub method: String,
    /// Tool, resource URI, prompt or model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<crate::l7::Arguments>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<RpcId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Status the agent got (0 when none was sent).
    pub http_status: u16,
    /// `result`, `error`, `http`, `input_required` or `cut`; absent when the
    /// call never reached the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// MCP `isError` (the tool failed).
    #[serde(default)]
    pub is_error: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageSummary>,
    /// Items the policy removed from a `tools/list`, `resources/list` or
    /// `prompts/list` result.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden: u32,
    /// What the call reserved and settled against its budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSummary>,
}

/// A budgeted call's reservation and settlement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetSummary {
    pub reserved: SpendSummary,
    /// None: released (the call failed before it cost anything).
    pub settled: Option<SpendSummary>,
    /// mesh ended the response stream at the reservation.
    #[serde(default)]
    pub cut: bool,
}

/// An amount in every budget unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpendSummary {
    pub tokens: u64,
    pub usd: f64,
    pub calls: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// LLM token usage of a call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSummary {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// True when counted from a stream cut before the provider's usage.
    pub estimated: bool,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One structured event for a record, at a level fixed per call site
/// (`tracing::event!` needs a constant level).
macro_rules! log_record {
    ($level:expr, $record:expr) => {{
        let record = &$record;
        tracing::event!(
            $level,
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
            protocol = record.protocol.map_or("tcp", |p| p.as_str()),
            server_name = record.server_name.as_deref().unwrap_or("-"),
            method = record.call.as_ref().map_or("-", |c| c.method.as_str()),
            name = record.call.as_ref().and_then(|c| c.name.as_deref()).unwrap_or("-"),
            outcome = record.call.as_ref().and_then(|c| c.outcome.as_deref()).unwrap_or("-"),
            "record"
        )
    }};
}

struct Ring {
    records: VecDeque<ConnectionRecord>,
    /// Sum of the records' [`ConnectionRecord::approx_bytes`].
    bytes: usize,
}

impl ConnectionRecord {
    /// The record with every text an agent can grow cut to its bound:
    /// arguments over [`RECORD_ARGUMENTS_MAX_BYTES`] become a marker with
    /// their length and a prefix, other texts end in a marker.
    pub fn bounded(mut self) -> ConnectionRecord {
        for text in [&mut self.reason, &mut self.server_name, &mut self.client] {
            cut(text);
        }
        if let Some(call) = &mut self.call {
            for text in [
                &mut call.name,
                &mut call.error_message,
                &mut call.session,
                &mut call.version,
            ] {
                cut(text);
            }
            let mut path = Some(std::mem::take(&mut call.path));
            cut(&mut path);
            call.path = path.unwrap_or_default();
            if let Some(args) = &call.arguments {
                let text = args.get();
                if text.len() > RECORD_ARGUMENTS_MAX_BYTES {
                    let prefix = &text[..floor_char_boundary(text, 256)];
                    let marker = serde_json::json!({
                        "mesh_truncated": true,
                        "bytes": text.len(),
                        "prefix": prefix,
                    });
                    call.arguments = serde_json::value::to_raw_value(&marker)
                        .ok()
                        .and_then(|raw| crate::l7::Arguments::from_raw("marker", &raw).ok())
                        .flatten();
                }
            }
        }
        self
    }

    /// Roughly what the record holds in memory, for the ring's byte bound.
    pub fn approx_bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        let mut n = std::mem::size_of::<ConnectionRecord>()
            + text(&self.agent)
            + text(&self.client)
            + text(&self.original_destination)
            + text(&self.rule)
            + text(&self.reason)
            + text(&self.server_name);
        if let Some(c) = &self.call {
            n += std::mem::size_of::<CallSummary>()
                + c.http_method.len()
                + c.path.len()
                + c.method.len()
                + text(&c.name)
                + c.arguments.as_ref().map_or(0, |a| a.get().len())
                + text(&c.session)
                + text(&c.version)
                + text(&c.outcome)
                + text(&c.error_message)
                + text(&c.provider);
        }
        n
    }
}

/// Cuts `text` to [`RECORD_TEXT_MAX_BYTES`] (at a character boundary),
/// marked.
fn cut(text: &mut Option<String>) {
    if let Some(t) = text.as_mut().filter(|t| t.len() > RECORD_TEXT_MAX_BYTES) {
        let total = t.len();
        t.truncate(floor_char_boundary(t, RECORD_TEXT_MAX_BYTES));
        t.push_str(&format!("…[mesh: cut, {total} bytes]"));
    }
}

fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Bounded ring of the most recent records: at most `capacity` of them and
/// [`RECORD_RING_MAX_BYTES`] of their text; every text an agent can grow is
/// cut to a bound before it is kept ([`ConnectionRecord::bounded`]).
pub struct RecordLog {
    ring: Mutex<Ring>,
    capacity: usize,
    next_id: AtomicU64,
    observer: std::sync::OnceLock<Arc<dyn RecordObserver>>,
}

impl RecordLog {
    pub fn new(capacity: usize) -> RecordLog {
        RecordLog {
            ring: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(1024)),
                bytes: 0,
            }),
            capacity,
            next_id: AtomicU64::new(1),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the observer of every record kept from now on (once).
    pub fn observe_with(&self, observer: Arc<dyn RecordObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps `record` for `audit tail` and logs it: connection records at
    /// INFO, per-request records (those with a `call`) at DEBUG, since at
    /// tens of thousands of calls a second formatting a line each would cost
    /// more CPU than proxying the call (the records themselves are the
    /// audit trail).
    pub fn push(&self, record: ConnectionRecord) {
        let follow_up = self.observer.get().and_then(|o| o.observe(&record));
        self.keep(record);
        if let Some(record) = follow_up {
            self.keep(ConnectionRecord {
                id: self.next_id(),
                ..record
            });
        }
    }

    fn keep(&self, record: ConnectionRecord) {
        let record = record.bounded();
        if record.call.is_none() {
            log_record!(tracing::Level::INFO, record);
        } else {
            log_record!(tracing::Level::DEBUG, record);
        }
        let size = record.approx_bytes();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        while ring.records.len() >= self.capacity
            || (!ring.records.is_empty() && ring.bytes + size > RECORD_RING_MAX_BYTES)
        {
            let Some(old) = ring.records.pop_front() else {
                break;
            };
            ring.bytes = ring.bytes.saturating_sub(old.approx_bytes());
        }
        ring.bytes += size;
        ring.records.push_back(record);
    }

    /// The newest `n` records, oldest first.
    pub fn tail(&self, n: usize) -> Vec<ConnectionRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = &ring.records;
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
            protocol: None,
            server_name: None,
            call: None,
        }
    }

    #[test]
    fn what_an_agent_can_grow_is_kept_bounded() {
        let log = RecordLog::new(3);
        let mut r = rec(1);
        r.reason = Some("é".repeat(RECORD_TEXT_MAX_BYTES));
        let args = format!(
            "{{\"blob\":\"{}\"}}",
            "x".repeat(RECORD_ARGUMENTS_MAX_BYTES)
        );
        let raw = serde_json::value::RawValue::from_string(args.clone()).unwrap();
        r.call = Some(CallSummary {
            name: Some("t".repeat(1 << 20)),
            arguments: crate::l7::Arguments::from_raw("a", &raw).unwrap(),
            ..CallSummary::default()
        });
        log.push(r);
        let kept = log.tail(1).remove(0);
        let reason = kept.reason.unwrap();
        assert!(
            reason.len() < RECORD_TEXT_MAX_BYTES + 64,
            "{}",
            reason.len()
        );
        assert!(reason.ends_with(&format!("[mesh: cut, {} bytes]", 2 * RECORD_TEXT_MAX_BYTES)));
        let call = kept.call.unwrap();
        assert!(call.name.unwrap().len() < RECORD_TEXT_MAX_BYTES + 64);
        let marker: serde_json::Value =
            serde_json::from_str(call.arguments.unwrap().get()).unwrap();
        assert_eq!(marker["mesh_truncated"], true);
        assert_eq!(marker["bytes"], args.len());
        assert!(log.ring.lock().unwrap().bytes < 64 * 1024);
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
