//! MCP session state shared across an agent's connections: calls whose
//! outcome arrives on another HTTP request (2024-11-05 responses on the
//! session's GET stream; the agent's replies to server-to-client requests)
//! and the 2024-11-05 GET streams refusals are injected into.
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
    HttpConn,
};
use crate::{
    config::{MAX_PENDING, PENDING_TTL},
    l7::{mcp::McpGeneration, Call, Direction, OutcomeStatus, Protocol, RpcId},
    proxy::pool::ProxyBody,
};

/// A call of the 2024-11-05 transport (HTTP+SSE): its responses come on the
/// session's GET stream, not on the POST that carried it.
pub(super) fn is_legacy(call: &Call) -> bool {
    call.mcp
        .as_ref()
        .is_some_and(|m| m.generation == McpGeneration::HttpSse)
}

/// Identifies a call whose outcome arrives on another HTTP request. Ids are
/// unique per session and direction only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub(super) dst: SocketAddr,
    pub(super) session: Arc<str>,
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

/// A 2024-11-05 session's GET stream: destination and session id.
type StreamKey = (SocketAddr, Arc<str>);

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
        let overflow = if map.len() < MAX_PENDING {
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

    pub(super) fn register_stream(
        &self,
        dst: SocketAddr,
        session: Arc<str>,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.insert((dst, session), tx);
        rx
    }

    pub(super) fn unregister_stream(&self, dst: SocketAddr, session: &Arc<str>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.remove(&(dst, session.clone()));
    }

    /// Queues an event for a session's GET stream; false when the session
    /// has no open stream through this daemon.
    pub(super) fn inject(&self, dst: SocketAddr, session: &str, event: Bytes) -> bool {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams
            .get(&(dst, Arc::from(session)))
            .is_some_and(|tx| tx.send(event).is_ok())
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
            dst: self.dst().0,
            session: call.session.as_deref()?.into(),
            direction: Direction::ClientToServer,
            id: call.id.clone()?,
        })
    }

    /// The agent answers a request its server sent it: forwarded as is; the
    /// record is that server-to-client call's.
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
        ex.rule = "reply".into();
        if let (Some(id), Some(session)) = (id, session.as_deref()) {
            let key = PendingKey {
                dst: self.dst().0,
                session: session.into(),
                direction: Direction::ServerToClient,
                id,
            };
            if let Some(Pending::ServerRequest { method, name, seen }) =
                self.proxy.sessions.take_pending(&key)
            {
                ex.summary.method = method;
                ex.summary.name = name;
                ex.clock = seen;
            }
        }
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
}
