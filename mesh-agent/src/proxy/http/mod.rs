//! HTTP/1.1 and HTTP/2 from governed agents (ARCHITECTURE.md section 2,
//! step 4). Each request goes down one pipeline, a stage per step:
//!
//! 1. header hygiene (`headers`, `upgrade`), the path in canonical form
//!    (`headers::normalize_path`);
//! 2. the body, buffered only when its content decides policy
//!    (`proxy::body`);
//! 3. classify (MCP, A2A, LLM API or plain HTTP; `l7::request`), opening
//!    the request's record (`exchange`);
//! 4. decide, from one policy snapshot; a refusal in the protocol's shape
//!    (`refuse`);
//! 5. reserve the call's maximum cost against its budgets (`gate`);
//! 6. forward on a pooled upstream connection (or relay an upgrade);
//! 7. settle a call budget once the server answers (`gate`);
//! 8. stream the response back through stacked body layers:
//!    inspect (`inspect`: the outcome, the record) → list filter
//!    (`list_filter`) → budget gate (`gate`) → inject (`inject`: refusals
//!    into a 2024-11-05 GET stream), or hand the call to its session when
//!    the outcome comes on another request (`sessions`).
//!
//! Bodies that decide policy (JSON) are buffered up to `body_limit`; all other
//! bodies, and every response, stream through with hyper's backpressure. A
//! response is never buffered as a whole: the inspector keeps a bounded copy
//! of a JSON response (to read its outcome) and parses SSE event by event.
mod exchange;
mod gate;
mod headers;
mod inject;
mod inspect;
mod list_filter;
mod refuse;
mod sessions;
mod upgrade;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use http_body_util::BodyExt as _;
use hyper::{
    body::Incoming,
    header,
    http::{request::Parts, response},
    Request, Response, StatusCode,
};

pub use self::{
    exchange::Exchange,
    sessions::{Pending, PendingKey, Sessions},
};
use self::{
    gate::BudgetGate,
    inject::Inject,
    inspect::{Inspect, Inspector},
    list_filter::{ListFilter, ListScope, SseListRewriter},
    refuse::PolicyRefusal,
};
use crate::{
    addr::OrigDst,
    l7::{
        request::{self, Classified},
        Call, Direction, Protocol,
    },
    policy::{DecisionPoint as _, PolicySet},
    proxy::{
        body::read_body,
        pool::{PoolKey, ProxyBody, UpstreamError, UpstreamTls},
        Conn, Proxy,
    },
};

/// One HTTP connection from a governed agent.
pub struct HttpConn {
    pub proxy: Arc<Proxy>,
    pub conn: Conn,
    pub agent: Arc<str>,
    /// Present when mesh terminated the agent's TLS.
    pub tls: Option<TlsLeg>,
    /// The agent spoke HTTP/2 (so does the upstream leg, where it can).
    pub h2: bool,
}

/// The terminated TLS of a connection.
pub struct TlsLeg {
    pub sni: Option<Arc<str>>,
    pub upstream: UpstreamTls,
}

impl HttpConn {
    fn dst(&self) -> OrigDst {
        self.conn
            .dst
            .unwrap_or(OrigDst(SocketAddr::from(([0, 0, 0, 0], 0))))
    }

    /// hyper's service entry point: never fails (errors become responses).
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        Ok(self.handle(req).await)
    }

    /// One request, down the pipeline of the module documentation.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let (clock, started) = (Instant::now(), SystemTime::now());
        let (mut parts, body) = req.into_parts();
        let upgrade = headers::prepare_request(&mut parts);
        let path = headers::normalize_path(&mut parts);
        let mut ex = Exchange::begin(&self, &parts, clock, started);
        if let Err(at) = ex.hold_slot() {
            return ex.refuse_at_limit(&at);
        }
        if let Err(e) = path {
            return ex.refuse_malformed(&e.into());
        }

        let limit = self.proxy.l7.body_limit;
        let (inspected, mut upstream_body) = match read_body(&parts, body, limit).await {
            Ok(read) => read,
            Err(e) => return ex.refuse_unread(e, limit),
        };
        ex.summary.request_bytes = inspected.len() as u64;

        let call = match request::classify(&parts, &inspected) {
            Ok(Classified::Call(call)) => call,
            Ok(Classified::Plain) => plain_call(&parts, upgrade.is_some()),
            Ok(Classified::Reply {
                id,
                session,
                status,
            }) => {
                return self
                    .forward_reply(ex, parts, upstream_body, id, session, status)
                    .await;
            }
            Err(e) => {
                let envelope = request::probe_envelope(&parts, &inspected);
                return ex.refuse_malformed_as(&e, &envelope);
            }
        };
        ex.describe(&call);

        // One snapshot for the whole request: a reload never changes the
        // rules under a call in flight.
        let policy = self.proxy.policies.snapshot();
        if let Some(refused) = self.check_name(&ex, &policy, &parts).await {
            ex.rule = refused.rule().to_owned();
            return self.refuse_decision(ex, &call, &parts.headers, refused);
        }
        if let Some(refused) = self.decide(&mut ex, &policy, &call) {
            return self.refuse_decision(ex, &call, &parts.headers, refused);
        }
        match self.reserve(&mut ex, &policy, &call, &inspected, &mut parts.headers) {
            Ok(Some(rewritten)) => upstream_body = rewritten,
            Ok(None) => {}
            Err(refused) => return self.refuse_budget(ex, &call, &parts.headers, refused),
        }

        let resp = match self
            .send_upstream(Request::from_parts(parts, upstream_body))
            .await
        {
            Ok(resp) => resp,
            Err(e) => return ex.upstream_failed(&e),
        };
        let (mut rparts, rbody) = resp.into_parts();
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS {
            return upgrade::switch_protocols(ex, upgrade.and_then(|u| u.on), rparts, rbody);
        }
        headers::strip_hop_by_hop(&mut rparts.headers);
        ex.summary.http_status = rparts.status.as_u16();
        gate::settle_call(&mut ex).await;
        self.respond(ex, call, policy, rparts, rbody).await
    }

    /// Decides `call` (ARCHITECTURE.md 5.1); None when it may go on.
    fn decide(&self, ex: &mut Exchange, policy: &PolicySet, call: &Call) -> Option<PolicyRefusal> {
        let ctx = ex.call_context(call);
        let decide_clock = Instant::now();
        let decision = policy.decide(&ctx);
        self.proxy
            .metrics
            .observe_decision(decide_clock.elapsed().as_secs_f64());
        ex.rule = decision.rule().to_owned();
        PolicyRefusal::of(decision)
    }

    /// The server's response, on its way back through the body layers.
    async fn respond(
        &self,
        mut ex: Exchange,
        call: Call,
        policy: Arc<PolicySet>,
        mut rparts: response::Parts,
        rbody: Incoming,
    ) -> Response<ProxyBody> {
        let limit = self.proxy.l7.body_limit;
        let gate = gate::for_response(&ex, &mut rparts);
        let inspector = Inspector::for_response(&call, &rparts, limit);
        let pending_key = self.pending_key_for_later_outcome(&call, &rparts);
        // MCP list results are filtered with the snapshot the call was
        // decided with; the call moves into the exchange only for them.
        let list = list_filter::list_to_filter(&call, &rparts, pending_key.is_some());
        let mut rewriter = None;
        if let Some(kind) = list {
            let sse = matches!(inspector, Inspector::JsonRpcSse(_));
            ex.list = Some(Box::new(ListScope { kind, policy, call }));
            if !sse {
                // Not an event stream: one JSON body, read whole (fails
                // closed when it is not JSON or over the limit).
                return list_filter::filter_json_list(ex, rparts, rbody, limit).await;
            }
            // The rewritten events change the length.
            rparts.headers.remove(header::CONTENT_LENGTH);
            rewriter = Some(Box::new(SseListRewriter::new()));
        }
        let body = match pending_key {
            // 2024-11-05: the POST gets 202 and the response comes on the GET
            // stream; the record completes there.
            Some(key) => {
                let pending = Pending::Call(Box::new(ex));
                self.proxy.sessions.insert_pending(key, pending);
                Inspect::new(rbody, Inspector::Count, None).boxed()
            }
            None => {
                let injected = matches!(inspector, Inspector::Legacy { .. })
                    .then(|| self.proxy.sessions.clone());
                let body = Inspect::new(rbody, inspector, Some(ex));
                let body = ListFilter::new(body, rewriter);
                let body = BudgetGate::new(body, gate);
                Inject::new(body, injected).boxed()
            }
        };
        Response::from_parts(rparts, body)
    }

    async fn send_upstream(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let dst = self.dst().0;
        let key = PoolKey {
            dst,
            tls_name: self.tls.as_ref().map(|t| {
                t.sni
                    .clone()
                    .unwrap_or_else(|| Arc::from(dst.ip().to_string()))
            }),
            upstream_ca: self.tls.as_ref().and_then(|t| t.upstream.extra_ca.clone()),
            h2: self.h2,
        };
        self.proxy
            .pool
            .send(&key, self.tls.as_ref().map(|t| &t.upstream), req)
            .await
    }
}

/// A request none of the protocols claims: plain HTTP, named by its path;
/// its method says when it asks for a protocol upgrade (a WebSocket), which
/// is no read.
fn plain_call(parts: &Parts, upgrade: bool) -> Call {
    let method = match upgrade {
        true => format!("{} (upgrade)", parts.method),
        false => parts.method.as_str().to_owned(),
    };
    Call {
        protocol: Protocol::Http,
        direction: Direction::ClientToServer,
        method,
        name: Some(parts.uri.path().to_owned()),
        arguments: None,
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: None,
    }
}
