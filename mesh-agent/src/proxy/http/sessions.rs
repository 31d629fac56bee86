//! MCP session state shared across an agent's connections: calls whose
//! outcome arrives on another HTTP request (2024-11-05 responses on the
//! session's GET stream; the agent's replies to server-to-client requests)
//! and the 2024-11-05 GET streams refusals are injected into.
//!
//! Everything is keyed by agent first: a session id or a request id another
//! agent saw (or guessed) never completes, answers or injects into this
//! agent's state. A reply is forwarded only when this agent's server sent
//! the request it answers, seen by the daemon on one of its streams.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{http::request::Parts, http::response, Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{
    exchange::{apply_status, Exchange},
    headers,
    inspect::{Inspect, Inspector},
    refuse::{jsonrpc_refusal, Framing},
    HttpConn,
};
use crate::{
    config::{MAX_PENDING, MAX_PENDING_PER_AGENT, PENDING_TTL},
    l7::{mcp::McpGeneration, Call, Direction, OutcomeStatus, Protocol, RpcId},
    policy::{EgressDecision, EgressPolicy as _},
    proxy::pool::ProxyBody,
    records::Verdict,
};

/// The rule a reply answering no request the mesh saw is refused under.
pub const RULE_UNMATCHED_REPLY: &str = "mcp.reply.unmatched";

/// A call of the 2024-11-05 transport (HTTP+SSE): its responses come on the
/// session's GET stream, not on the POST that carried it.
pub(super) fn is_legacy(call: &Call) -> bool {
    call.mcp
        .as_ref()
        .is_some_and(|m| m.generation == McpGeneration::HttpSse)
}

/// Identifies a call whose outcome arrives on another HTTP request. Ids are
/// unique per session and direction only, and sessions per agent and server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub(super) agent: Arc<str>,
    pub(super) dst: SocketAddr,
    /// None for a server without sessions (stateless streamable HTTP).
    pub(super) session: Option<Arc<str>>,
    pub(super) direction: Direction,
    pub(super) id: RpcId,
}

pub enum Pending {
    /// A client call whose response arrives on the 2024-11-05 GET stream.
    Call(Box<Exchange>),
    /// A server-to-client request seen on a stream; the agent's reply comes
    /// as its own POST.
    ServerRequest {
        method: String,
        name: Option<String>,
        seen: Instant,
    },
}

/// A 2024-11-05 session's GET stream: agent, destination and session id.
pub(super) type StreamKey = (Arc<str>, SocketAddr, Arc<str>);

/// State shared across an agent's connections: calls waiting for their
/// outcome and the 2024-11-05 streams refusals are injected into.
#[derive(Default)]
pub struct Sessions {
    pending: Mutex<HashMap<PendingKey, (Instant, Pending)>>,
    last_sweep: Mutex<Option<Instant>>,
    streams: Mutex<HashMap<StreamKey, mpsc::UnboundedSender<Bytes>>>,
}

impl Sessions {
    pub(super) fn insert_pending(&self, key: PendingKey, pending: Pending) {
        let now = Instant::now();
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Calls whose outcome never came (the session's stream was not
        // through this daemon, the server never answered) are recorded
        // without one once they expire, swept at most once a TTL.
        let mut expired = Vec::new();
        let sweep_due = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| now.duration_since(at) >= PENDING_TTL);
            if due || map.len() >= MAX_PENDING {
                *last = Some(now);
                true
            } else {
                false
            }
        };
        if sweep_due {
            let keys: Vec<PendingKey> = map
                .iter()
                .filter(|(_, (at, _))| now.duration_since(*at) >= PENDING_TTL)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                if let Some((_, p)) = map.remove(&k) {
                    expired.push(p);
                }
            }
        }
        // One agent may hold only its share, so another's calls still find
        // room (the count is of this agent's entries, read only when the
        // table is past that share in all).
        let agent_full = map.len() >= MAX_PENDING_PER_AGENT
            && map.keys().filter(|k| k.agent == key.agent).count() >= MAX_PENDING_PER_AGENT;
        let overflow = if map.len() < MAX_PENDING && !agent_full {
            map.insert(key, (now, pending));
            None
        } else {
            Some(pending)
        };
        drop(map);
        // Too many in flight to track, or expired: recorded now, without an
        // outcome (outside the lock: writing a record logs).
        for p in expired.into_iter().chain(overflow) {
            if let Pending::Call(ex) = p {
                ex.finish_now();
            }
        }
    }

    pub(super) fn take_pending(&self, key: &PendingKey) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key).map(|(_, p)| p)
    }

    pub(super) fn complete(&self, key: &PendingKey, status: OutcomeStatus, is_error: bool) {
        if let Some(Pending::Call(ex)) = self.take_pending(key) {
            ex.finish(status, is_error, None);
        }
    }

    pub(super) fn register_stream(&self, key: StreamKey) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.insert(key, tx);
        rx
    }

    pub(super) fn unregister_stream(&self, key: &StreamKey) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.remove(key);
    }

    /// Queues an event for a session's GET stream; false when the agent has
    /// no open stream of that session through this daemon.
    pub(super) fn inject(&self, key: &StreamKey, event: Bytes) -> bool {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.get(key).is_some_and(|tx| tx.send(event).is_ok())
    }
}

impl HttpConn {
    /// A 2024-11-05 call (POST to the message endpoint) answered 202: its
    /// outcome arrives on the session's GET stream.
    pub(super) fn pending_key_for_later_outcome(
        &self,
        call: &Call,
        resp: &response::Parts,
    ) -> Option<PendingKey> {
        if !is_legacy(call) || resp.status != StatusCode::ACCEPTED {
            return None;
        }
        Some(PendingKey {
            agent: self.agent.clone(),
            dst: self.dst().0,
            session: Some(call.session.as_deref()?.into()),
            direction: Direction::ClientToServer,
            id: call.id.clone()?,
        })
    }

    /// The agent answers a request its server sent it: forwarded as is when
    /// egress allows the destination and the daemon saw that request on one
    /// of this agent's streams to this server (same session, same id); the
    /// record is that server-to-client call's. Any other reply is refused: a
    /// body shaped as a reply must not carry data past every decision.
    pub(super) async fn forward_reply(
        self: &Arc<Self>,
        mut ex: Exchange,
        parts: Parts,
        body: ProxyBody,
        id: Option<RpcId>,
        session: Option<String>,
        status: OutcomeStatus,
    ) -> Response<ProxyBody> {
        ex.protocol = Protocol::Mcp;
        ex.summary.direction = Some(Direction::ServerToClient);
        ex.summary.method = "reply".into();
        ex.summary.jsonrpc_id = id.clone();
        ex.summary.session = session.clone();
        let dst = self.dst();
        let policy = self.proxy.policies.snapshot();
        if let Err(unbound) = self
            .proxy
            .vouch(&policy, &self.agent, dst, ex.server_name.as_deref())
            .await
        {
            let reason = unbound.to_string();
            return self.refuse_reply(ex, id.as_ref(), crate::proxy::RULE_NAME_UNBOUND, reason);
        }
        match policy.decide_egress(&self.agent, dst.normalized(), ex.server_name.as_deref()) {
            EgressDecision::Refuse { rule, reason } => {
                return self.refuse_reply(ex, id.as_ref(), &rule, reason);
            }
            EgressDecision::Allow { .. } => {}
        }
        let request = id.clone().and_then(|id| {
            self.proxy.sessions.take_pending(&PendingKey {
                agent: self.agent.clone(),
                dst: dst.0,
                session: session.as_deref().map(Arc::from),
                direction: Direction::ServerToClient,
                id,
            })
        });
        let Some(Pending::ServerRequest { method, name, seen }) = request else {
            let reason = format!(
                "a JSON-RPC reply (id {}) to no request this server sent agent {} in {}; \
                 replies pass only as answers to requests the mesh saw",
                id.as_ref()
                    .map_or_else(|| "null".to_owned(), |i| i.to_string()),
                self.agent,
                session
                    .as_deref()
                    .map_or_else(|| "no session".to_owned(), |s| format!("session {s}")),
            );
            return self.refuse_reply(ex, id.as_ref(), RULE_UNMATCHED_REPLY, reason);
        };
        ex.rule = "reply".into();
        ex.summary.method = method;
        ex.summary.name = name;
        ex.clock = seen;
        apply_status(&mut ex.summary, &status, false);
        let req = Request::from_parts(parts, body);
        match self.send_upstream(req).await {
            Ok(resp) => {
                let (mut rparts, rbody) = resp.into_parts();
                headers::strip_hop_by_hop(&mut rparts.headers);
                ex.summary.http_status = rparts.status.as_u16();
                let body = Inspect::new(rbody, Inspector::Count, None);
                ex.finish_now();
                Response::from_parts(rparts, body.boxed())
            }
            Err(e) => ex.upstream_failed(&e),
        }
    }

    /// Refuses a reply: 403 and a JSON-RPC error carrying the reply's id.
    fn refuse_reply(
        &self,
        mut ex: Exchange,
        id: Option<&RpcId>,
        rule: &str,
        reason: String,
    ) -> Response<ProxyBody> {
        ex.verdict = Verdict::RefusedPolicy;
        ex.rule = rule.to_owned();
        let mut resp = jsonrpc_refusal(id, rule, &reason, ex.audit_id, Framing::Json);
        *resp.status_mut() = StatusCode::FORBIDDEN;
        ex.reason = Some(reason);
        ex.respond_now(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(agent: &str) -> PendingKey {
        PendingKey {
            agent: agent.into(),
            dst: "127.0.0.1:7001".parse().unwrap(),
            session: Some("s-1".into()),
            direction: Direction::ServerToClient,
            id: RpcId::Number(1),
        }
    }

    #[test]
    fn another_agents_ids_reach_nothing() {
        let sessions = Sessions::default();
        let request = || Pending::ServerRequest {
            method: "sampling/createMessage".into(),
            name: None,
            seen: Instant::now(),
        };
        sessions.insert_pending(key("bot"), request());
        // The same destination, session and id, from another agent.
        assert!(sessions.take_pending(&key("other")).is_none());
        assert!(sessions.take_pending(&key("bot")).is_some());

        let dst = key("bot").dst;
        let _stream = sessions.register_stream(("bot".into(), dst, "s-1".into()));
        let event = || Bytes::from_static(b"event: message\ndata: {}\n\n");
        assert!(!sessions.inject(&("other".into(), dst, "s-1".into()), event()));
        assert!(sessions.inject(&("bot".into(), dst, "s-1".into()), event()));
    }

    #[test]
    fn one_agent_cannot_fill_the_table_for_another() {
        let sessions = Sessions::default();
        let request = || Pending::ServerRequest {
            method: "ping".into(),
            name: None,
            seen: Instant::now(),
        };
        let numbered = |agent: &str, n: i64| PendingKey {
            id: RpcId::Number(n),
            ..key(agent)
        };
        for n in 0..(MAX_PENDING_PER_AGENT as i64 + 10) {
            sessions.insert_pending(numbered("bot", n), request());
        }
        let held = sessions.pending.lock().unwrap().len();
        assert_eq!(held, MAX_PENDING_PER_AGENT);
        sessions.insert_pending(numbered("other", 1), request());
        assert!(sessions.take_pending(&numbered("other", 1)).is_some());
    }
}
