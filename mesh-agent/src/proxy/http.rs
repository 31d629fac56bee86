//! HTTP/1.1 and HTTP/2 from governed agents: every request is classified
//! (MCP, A2A, LLM API or plain HTTP), decided, forwarded on a pooled upstream
//! connection and its response streamed back through an inspector that
//! extracts the outcome (JSON-RPC result or error, LLM usage) on the fly.
//!
//! Bodies that decide policy (JSON) are buffered up to `body_limit`; all other
//! bodies, and every response, stream through with hyper's backpressure. A
//! response is never buffered as a whole: the inspector keeps a bounded copy
//! of a JSON response (to read its outcome) and parses SSE event by event.
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderMap, HeaderName, HeaderValue},
    http::request::Parts,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    filter::{self, ListRewrite, SseEventSplitter},
    pool::{BoxError, PoolKey, ProxyBody, UpstreamError, UpstreamTls},
    refuse::{self, Framing},
    Conn, Proxy,
};
use crate::{
    addr::OrigDst,
    budget::{
        charge::{self, BudgetRefusal, Charge, RefusalKind},
        Commit, Spend,
    },
    config::QUARANTINE_AFTER_REFUSAL,
    l7::{
        jsonrpc::{self, Message},
        llm::{LlmApi, Usage, UsageTracker},
        mcp::{self, McpGeneration},
        request::{self, Classified},
        sse::{SseEvent, SseParser},
        Call, Direction, L7Error, Outcome, OutcomeStatus, Protocol, RpcId,
    },
    policy::{CallContext, Decision, DecisionPoint, ListKind, OnExhaust, PolicySet},
    records::{
        unix_ms, BudgetSummary, CallSummary, ConnectionRecord, SpendSummary, UsageSummary, Verdict,
    },
    state::Governor,
};

/// Largest single SSE event the inspector parses; larger events pass through
/// unparsed (the stream is not cut for it).
const MAX_SSE_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Calls whose outcome arrives on another request (2024-11-05 responses on
/// the GET stream; replies to server-to-client requests) are remembered this
/// long and at most this many at once.
const PENDING_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 16_384;

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

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let clock = Instant::now();
        let started = SystemTime::now();
        let (mut parts, body) = req.into_parts();
        // A protocol upgrade (WebSocket) keeps its Upgrade/Connection headers
        // and, once the server agrees (101), becomes a byte relay.
        let upgrade = wants_upgrade(&parts.headers).then(|| {
            let value = parts.headers.get(header::UPGRADE).cloned();
            (
                value,
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            )
        });
        strip_hop_by_hop(&mut parts.headers);
        if let Some((Some(value), _)) = &upgrade {
            parts.headers.insert(header::UPGRADE, value.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let server_name = self.server_name(&parts);
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let audit_id = self.proxy.records.next_id();
        let mut ex = Exchange {
            conn: self.clone(),
            audit_id,
            start_unix_ms: unix_ms(started),
            clock,
            protocol: Protocol::Http,
            server_name: server_name.clone(),
            summary: CallSummary {
                http_method: parts.method.as_str().to_owned(),
                path: path.clone(),
                method: parts.method.as_str().to_owned(),
                ..CallSummary::default()
            },
            tool: None,
            llm: None,
            verdict: Verdict::Forwarded,
            rule: String::new(),
            reason: None,
            list: None,
            forced_outcome: None,
            charge: None,
        };

        // The body, when its content decides policy.
        let limit = self.proxy.l7.body_limit;
        let (inspected, mut upstream_body): (Bytes, ProxyBody) = if request::wants_body(&parts) {
            match read_limited(body, &parts.headers, limit).await {
                Ok(bytes) => (
                    bytes.clone(),
                    Full::new(bytes).map_err(|n| match n {}).boxed(),
                ),
                Err(ReadError::TooLarge) => {
                    let e = L7Error::TooLarge { limit };
                    return ex.refuse_malformed(&e);
                }
                Err(ReadError::Client(e)) => {
                    ex.verdict = Verdict::Malformed;
                    ex.reason = Some(format!("reading the request body: {e}"));
                    ex.rule = "http".into();
                    return ex.respond_now(refuse::http_refusal(
                        StatusCode::BAD_REQUEST,
                        "http",
                        "the request body could not be read",
                        audit_id,
                    ));
                }
            }
        } else {
            (Bytes::new(), body.map_err(BoxError::from).boxed())
        };
        ex.summary.request_bytes = inspected.len() as u64;

        let classified = match request::classify(&parts, &inspected) {
            Ok(c) => c,
            Err(e) => return ex.refuse_malformed(&e),
        };
        let call = match classified {
            Classified::Call(call) => call,
            Classified::Plain => Call {
                protocol: Protocol::Http,
                direction: Direction::ClientToServer,
                method: parts.method.as_str().to_owned(),
                name: Some(parts.uri.path().to_owned()),
                arguments: None,
                id: None,
                session: None,
                version: None,
                mcp: None,
                a2a: None,
                llm: None,
            },
            Classified::Reply {
                id,
                session,
                status,
            } => {
                // The agent answers a request its server sent it: forwarded
                // as is; the record is that server-to-client call's.
                return self
                    .forward_reply(ex, parts, upstream_body, id, session, status)
                    .await;
            }
        };
        ex.describe(&call);

        // One snapshot for the whole request: a reload never changes the
        // rules under a call in flight.
        let policy = self.proxy.policies.snapshot();
        let ctx = CallContext {
            agent: &self.agent,
            cgroup_id: self.conn.identity.as_ref().map_or(0, |i| i.cgroup_id),
            pid: self.conn.identity.as_ref().map_or(0, |i| i.pid),
            uid: self.conn.identity.as_ref().map_or(0, |i| i.uid),
            server: self.dst().normalized(),
            server_name: server_name.as_deref(),
            path: &path,
            call: &call,
        };
        let decide_clock = Instant::now();
        let decision = policy.decide(&ctx);
        self.proxy
            .metrics
            .observe_decision(decide_clock.elapsed().as_secs_f64());
        ex.rule = decision.rule().to_owned();
        match decision {
            Decision::Allow { .. } => {}
            Decision::Refuse { rule, reason } => {
                ex.verdict = Verdict::RefusedPolicy;
                ex.reason = Some(reason.clone());
                let resp = refusal(
                    &call,
                    &parts.headers,
                    StatusCode::FORBIDDEN,
                    &rule,
                    &reason,
                    audit_id,
                );
                return self.refuse_in_stream(ex, &call, resp);
            }
            Decision::Hold { rule, reason } => {
                let reason = format!("approval required: {reason}");
                ex.verdict = Verdict::Held;
                ex.reason = Some(reason.clone());
                let resp = refusal(
                    &call,
                    &parts.headers,
                    StatusCode::FORBIDDEN,
                    &rule,
                    &reason,
                    audit_id,
                );
                return self.refuse_in_stream(ex, &call, resp);
            }
        }

        // Budgets: the call's maximum cost is reserved before it is
        // forwarded (ARCHITECTURE.md 5.3).
        if let Some(scope) = policy.budget_scope(&ctx) {
            match charge::reserve(&self.proxy.ledger, &self.agent, &scope, &call, &inspected) {
                Ok(reserved) => {
                    ex.summary.budget = Some(budget_summary(&reserved.charge));
                    if let Some(body) = reserved.rewritten_body {
                        parts
                            .headers
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                        upstream_body =
                            Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed();
                    }
                    ex.charge = Some(reserved.charge);
                }
                Err(refused) => return self.refuse_budget(ex, &call, &parts.headers, refused),
            }
        }

        let req = Request::from_parts(parts, upstream_body);
        let resp = match self.send_upstream(req).await {
            Ok(resp) => resp,
            Err(e) => {
                ex.verdict = Verdict::UpstreamFailed;
                ex.reason = Some(e.to_string());
                return ex.respond_now(refuse::bad_gateway(&e.to_string(), audit_id));
            }
        };
        let (mut rparts, rbody) = resp.into_parts();
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch_protocols(ex, upgrade.and_then(|(_, on)| on), rparts, rbody);
        }
        strip_hop_by_hop(&mut rparts.headers);
        ex.summary.http_status = rparts.status.as_u16();
        // A call budget is spent once the server answers; the agent sees the
        // answer only once that is durable.
        if matches!(ex.charge, Some(Charge::Call(_))) {
            let spend = Spend {
                calls: 1,
                ..Spend::default()
            };
            if let Some(commit) = ex.settle(Some(spend), false) {
                if let Err(e) = commit.await {
                    warn!(agent = %self.agent, error = %e, "budget settlement not persisted");
                }
            }
        }
        let gate = match &ex.charge {
            Some(Charge::Llm(llm)) if rparts.status.is_success() => {
                let sse = rparts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("text/event-stream"));
                if sse {
                    // Events are forwarded whole; a cut adds its own end.
                    rparts.headers.remove(header::CONTENT_LENGTH);
                }
                Some(Box::new(BudgetGate::new(sse, llm.api, llm.output_bound)))
            }
            _ => None,
        };
        let inspector = Inspector::for_response(&call, &rparts, limit);
        let pending_key = self.pending_key_for_later_outcome(&call, &rparts);
        // MCP list results are filtered with the snapshot the call was
        // decided with; the call moves into the exchange only for them.
        // Not yet: 2024-11-05 list results, which arrive on the session's GET
        // stream (`pending_key`); their items are still refused per call.
        let list_kind = ListKind::of_method(&call.method).filter(|_| {
            call.protocol == Protocol::Mcp
                && call.direction == Direction::ClientToServer
                && rparts.status.is_success()
                && pending_key.is_none()
        });
        let mut rewriter = None;
        if let Some(kind) = list_kind {
            let sse = matches!(inspector, Inspector::JsonRpcSse(_));
            ex.list = Some(Box::new(ListScope { kind, policy, call }));
            if !sse {
                // Not an event stream: one JSON body, read whole (fails
                // closed when it is not JSON or over the limit).
                return filter_json_list(ex, rparts, rbody, limit).await;
            }
            // The rewritten events change the length.
            rparts.headers.remove(header::CONTENT_LENGTH);
            rewriter = Some(Box::new(SseListRewriter::new()));
        }
        let body = match pending_key {
            // 2024-11-05: the POST gets 202 and the response comes on the GET
            // stream; the record completes there.
            Some(key) => {
                self.proxy
                    .sessions
                    .insert_pending(key, Pending::Call(Box::new(ex)));
                InspectBody::new(rbody, Inspector::Count, None, None)
            }
            None => {
                let injected = if matches!(inspector, Inspector::Legacy { .. }) {
                    Some(self.proxy.sessions.clone())
                } else {
                    None
                };
                let mut body = InspectBody::new(rbody, inspector, Some(ex), injected);
                body.rewriter = rewriter;
                body.gate = gate;
                body
            }
        };
        Response::from_parts(rparts, body.boxed())
    }

    /// The server agreed to an upgrade: both sides' connections are handed
    /// over by hyper and relayed as bytes until either closes.
    fn switch_protocols(
        &self,
        mut ex: Exchange,
        client: Option<hyper::upgrade::OnUpgrade>,
        rparts: hyper::http::response::Parts,
        rbody: Incoming,
    ) -> Response<ProxyBody> {
        ex.summary.http_status = rparts.status.as_u16();
        let mut upstream_resp = Response::from_parts(rparts.clone(), rbody);
        let upstream = hyper::upgrade::on(&mut upstream_resp);
        if let Some(client) = client {
            tokio::spawn(async move {
                match tokio::try_join!(client, upstream) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                            Ok((up, down)) => {
                                ex.summary.request_bytes += up;
                                ex.summary.response_bytes = down;
                            }
                            Err(e) => ex.reason = Some(format!("upgraded connection: {e}")),
                        }
                    }
                    Err(e) => ex.reason = Some(format!("upgrade failed: {e}")),
                }
                ex.finish(OutcomeStatus::Http { status: 101 }, false, None);
            });
        }
        let mut resp = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = rparts.headers;
        resp
    }

    /// A 2024-11-05 call (POST to the message endpoint) answered 202: its
    /// outcome arrives on the session's GET stream.
    fn pending_key_for_later_outcome(
        &self,
        call: &Call,
        resp: &hyper::http::response::Parts,
    ) -> Option<PendingKey> {
        let legacy = call
            .mcp
            .as_ref()
            .is_some_and(|m| m.generation == McpGeneration::HttpSse);
        if !legacy || resp.status != StatusCode::ACCEPTED {
            return None;
        }
        Some(PendingKey {
            dst: self.dst().0,
            session: call.session.as_deref()?.into(),
            direction: Direction::ClientToServer,
            id: call.id.clone()?,
        })
    }

    /// A call its budgets cannot take: 429 (LLM, HTTP) or the JSON-RPC
    /// refusal (MCP, A2A), naming the budget; then what the budget's
    /// `on_exhaust` asks for.
    fn refuse_budget(
        &self,
        mut ex: Exchange,
        call: &Call,
        headers: &HeaderMap,
        refused: BudgetRefusal,
    ) -> Response<ProxyBody> {
        let BudgetRefusal {
            kind,
            rule,
            reason,
            on_exhaust,
            retry_after,
        } = refused;
        let (verdict, reason) = match on_exhaust {
            OnExhaust::Halt => (Verdict::RefusedPolicy, reason),
            // Until approvals exist, a hold is a refusal that says so.
            OnExhaust::Escalate => (Verdict::Held, format!("approval required: {reason}")),
            OnExhaust::Quarantine => (
                Verdict::RefusedPolicy,
                format!("{reason}; agent {} quarantined", self.agent),
            ),
        };
        ex.verdict = verdict;
        ex.rule = rule.clone();
        ex.reason = Some(reason.clone());
        let status = match kind {
            RefusalKind::Exhausted => StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::Unpriced => StatusCode::FORBIDDEN,
        };
        let mut resp = refusal(call, headers, status, &rule, &reason, ex.audit_id);
        if let Some(after) = retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        let resp = self.refuse_in_stream(ex, call, resp);
        if on_exhaust != OnExhaust::Quarantine {
            return resp;
        }
        // The kernel quarantine drops the agent's traffic, established
        // connections included: it starts once the refusal is out.
        let quarantine = QuarantineWhenSent {
            governor: self.proxy.governor.clone(),
            agent: self.agent.clone(),
            rule,
        };
        resp.map(|inner| {
            AfterBody {
                inner,
                then: Some(quarantine),
            }
            .boxed()
        })
    }

    /// A refusal of a 2024-11-05 call must arrive where its response would:
    /// on the session's GET stream. The POST itself is accepted (202).
    fn refuse_in_stream(
        &self,
        ex: Exchange,
        call: &Call,
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let legacy = call
            .mcp
            .as_ref()
            .is_some_and(|m| m.generation == McpGeneration::HttpSse);
        if legacy {
            if let (Some(session), Some(id)) = (call.session.as_deref(), call.id.as_ref()) {
                let message = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": refuse::POLICY_REFUSAL_CODE,
                        "message": format!("refused by mesh policy rule {}", ex.rule),
                        "data": { "rule": ex.rule, "reason": ex.reason, "audit_id": ex.audit_id },
                    },
                });
                if self
                    .proxy
                    .sessions
                    .inject(self.dst().0, session, refuse::sse_event(&message))
                {
                    let mut accepted = Response::new(
                        Full::new(Bytes::from_static(b"Accepted"))
                            .map_err(|n| match n {})
                            .boxed(),
                    );
                    *accepted.status_mut() = StatusCode::ACCEPTED;
                    return ex.respond_now(accepted);
                }
            }
        }
        ex.respond_now(resp)
    }

    async fn forward_reply(
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
                strip_hop_by_hop(&mut rparts.headers);
                ex.summary.http_status = rparts.status.as_u16();
                let body = InspectBody::new(rbody, Inspector::Count, None, None);
                ex.finish_now();
                Response::from_parts(rparts, body.boxed())
            }
            Err(e) => {
                ex.verdict = Verdict::UpstreamFailed;
                ex.reason = Some(e.to_string());
                let audit_id = ex.audit_id;
                ex.respond_now(refuse::bad_gateway(&e.to_string(), audit_id))
            }
        }
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

    /// The name the agent used: the SNI it sent, else the HTTP authority
    /// (without port, lower case).
    fn server_name(&self, parts: &Parts) -> Option<String> {
        if let Some(sni) = self.tls.as_ref().and_then(|t| t.sni.as_deref()) {
            return Some(sni.to_owned());
        }
        let authority = parts
            .uri
            .authority()
            .map(|a| a.host().to_owned())
            .or_else(|| {
                let host = parts.headers.get(header::HOST)?.to_str().ok()?;
                let auth: hyper::http::uri::Authority = host.parse().ok()?;
                Some(auth.host().to_owned())
            })?;
        let host = authority.trim_start_matches('[').trim_end_matches(']');
        Some(host.to_ascii_lowercase())
    }
}

/// The refusal a call gets, in its protocol's shape.
fn refusal(
    call: &Call,
    headers: &HeaderMap,
    status: StatusCode,
    rule: &str,
    reason: &str,
    audit_id: u64,
) -> Response<ProxyBody> {
    match call.protocol {
        Protocol::Mcp | Protocol::A2a => {
            let wants_stream = call.a2a.as_ref().is_some_and(|a| a.streaming);
            let framing = Framing::for_request(headers, wants_stream);
            refuse::jsonrpc_refusal(call.id.as_ref(), rule, reason, audit_id, framing)
        }
        Protocol::Llm => {
            let api = call.llm.as_ref().map_or(LlmApi::ChatCompletions, |l| l.api);
            refuse::llm_refusal(api, status, rule, reason, audit_id)
        }
        Protocol::Http | Protocol::Tcp | Protocol::Tls => {
            refuse::http_refusal(status, rule, reason, audit_id)
        }
    }
}

/// A list call answered with one JSON body: read whole (up to `limit`),
/// filtered, and sent with its new length. Fails closed: a body over the
/// limit or one that cannot be read as a list result is not forwarded; the
/// agent gets a JSON-RPC error with its call's id (HTTP 200, like a policy
/// refusal: `-32600` over the limit, `-32700` unreadable) and the record
/// says `malformed`, rule `mcp.list_filter`.
async fn filter_json_list(
    mut ex: Exchange,
    mut rparts: hyper::http::response::Parts,
    rbody: Incoming,
    limit: usize,
) -> Response<ProxyBody> {
    let method = ex.summary.method.clone();
    let body: Bytes = match Limited::new(rbody, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            match ex.filter_list(&bytes) {
                Ok(ListRewrite::Filtered { message, .. }) => Bytes::from(message),
                Ok(ListRewrite::Unchanged | ListRewrite::NotTheResult) => bytes,
                Err(e) => Bytes::from(ex.list_unfiltered(-32700, format!("{method}: {e}"))),
            }
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Bytes::from(ex.list_unfiltered(
            -32600,
            format!("{method} result larger than the {limit}-byte inspection limit"),
        )),
        Err(e) => {
            ex.verdict = Verdict::UpstreamFailed;
            ex.reason = Some(format!("reading the {method} result: {e}"));
            let audit_id = ex.audit_id;
            return ex.respond_now(refuse::bad_gateway(&e.to_string(), audit_id));
        }
    };
    if ex.forced_outcome.is_some() {
        rparts.status = StatusCode::OK;
        rparts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        rparts.headers.remove(header::CONTENT_ENCODING);
    }
    rparts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    ex.summary.http_status = rparts.status.as_u16();
    ex.summary.response_bytes = body.len() as u64;
    let (status, is_error) = match jsonrpc::parse_message(&body) {
        Ok(Message::Response {
            status, is_error, ..
        }) => (status, is_error),
        _ => (OutcomeStatus::Result, false),
    };
    ex.finish(status, is_error, None);
    Response::from_parts(rparts, Full::new(body).map_err(|n| match n {}).boxed())
}

/// Rewrites the event carrying a list call's response on a Streamable HTTP
/// event stream; every other event passes as it came. Events are held only
/// until they end, and only until the response has been seen.
struct SseListRewriter {
    splitter: SseEventSplitter,
    parser: SseParser,
    /// The response was seen: the rest passes straight through.
    done: bool,
    /// Held bytes were flushed at the stream's end.
    flushed: bool,
}

impl SseListRewriter {
    fn new() -> SseListRewriter {
        SseListRewriter {
            splitter: SseEventSplitter::new(),
            parser: SseParser::new(MAX_SSE_EVENT_BYTES),
            done: false,
            flushed: false,
        }
    }

    /// The bytes to send for `data`, which may be fewer (an event held
    /// until it ends) or rewritten.
    fn rewrite(&mut self, data: Bytes, ex: Option<&mut Exchange>) -> Bytes {
        if self.done {
            return data;
        }
        let Some(ex) = ex else {
            return data;
        };
        let SseListRewriter {
            splitter,
            parser,
            done,
            ..
        } = self;
        let mut out: Vec<u8> = Vec::new();
        splitter.push(&data, |event| {
            if *done {
                out.extend_from_slice(event);
                return;
            }
            let mut message: Option<String> = None;
            let parsed = parser.feed(event, |ev: &SseEvent<'_>| {
                if !ev.data.is_empty() {
                    message = Some(ev.data.to_owned());
                }
            });
            if let Err(e) = parsed {
                // An event that cannot be read might be the response: fail
                // closed. Events are whole, so a new parser is in step.
                *parser = SseParser::new(MAX_SSE_EVENT_BYTES);
                let error = ex.list_unfiltered(-32700, format!("{}: {e}", ex.summary.method));
                out.extend_from_slice(&filter::replace_event_data(event, &error));
                *done = true;
                return;
            }
            let Some(message) = message else {
                out.extend_from_slice(event);
                return;
            };
            match ex.filter_list(message.as_bytes()) {
                Ok(ListRewrite::NotTheResult) => out.extend_from_slice(event),
                Ok(ListRewrite::Unchanged) => {
                    out.extend_from_slice(event);
                    *done = true;
                }
                Ok(ListRewrite::Filtered { message, .. }) => {
                    out.extend_from_slice(&filter::replace_event_data(event, &message));
                    *done = true;
                }
                Err(e) => {
                    let error = ex.list_unfiltered(-32700, format!("{}: {e}", ex.summary.method));
                    out.extend_from_slice(&filter::replace_event_data(event, &error));
                    *done = true;
                }
            }
        });
        if *done {
            // What follows the response in this chunk passes as it came.
            out.extend_from_slice(&splitter.finish());
        }
        Bytes::from(out)
    }

    /// The stream ended: an unfinished event is passed as it was.
    fn flush(&mut self) -> Option<Bytes> {
        if self.flushed {
            return None;
        }
        self.flushed = true;
        let rest = self.splitter.finish();
        (!rest.is_empty()).then(|| Bytes::from(rest))
    }
}

enum ReadError {
    TooLarge,
    Client(BoxError),
}

/// Reads a request body up to `limit` bytes; a declared length over the limit
/// is refused before reading.
async fn read_limited(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Client(e)),
    }
}

/// `Connection: upgrade` with an `Upgrade` header (HTTP/1.1 only).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Connection-level headers are not forwarded (RFC 9110 section 7.6.1), nor
/// those the `Connection` header names.
/// RFC 9110 7.6.1 hop-by-hop fields (lowercase, as `http` stores names);
/// `te` is kept when it only says `trailers`.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry at most `Connection: keep-alive` (or `close`):
    // one pass over the names decides whether anything needs removing.
    let mut connection_names_others = false;
    let mut any = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            any = true;
            connection_names_others |= value.as_bytes().split(|&b| b == b',').any(|token| {
                let token = token.trim_ascii();
                !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"close")
            });
        } else if HOP_BY_HOP.contains(&name.as_str()) || name == header::TE {
            any = true;
        }
    }
    if !any {
        return;
    }
    if connection_names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|v| v != HeaderValue::from_static("trailers"))
    {
        headers.remove(header::TE);
    }
}

/// What is needed to write a request's record once its outcome is known.
pub struct Exchange {
    conn: Arc<HttpConn>,
    audit_id: u64,
    start_unix_ms: u64,
    clock: Instant,
    protocol: Protocol,
    server_name: Option<String>,
    summary: CallSummary,
    /// `(server, tool)` of a tools/call, for `mesh_tool_calls_total`.
    tool: Option<(String, String)>,
    /// `(provider, model)` of an LLM call, for `mesh_llm_tokens_total`.
    llm: Option<(&'static str, String)>,
    verdict: Verdict,
    rule: String,
    reason: Option<String>,
    /// For `tools/list`, `resources/list`, `prompts/list`: what filtering
    /// their result needs.
    list: Option<Box<ListScope>>,
    /// The outcome the agent got when mesh answered in the server's place
    /// (a list result that could not be filtered).
    forced_outcome: Option<OutcomeStatus>,
    /// What the call reserved against its budgets, until it settles.
    charge: Option<Charge>,
}

/// A list call whose result is filtered: the policy snapshot it was decided
/// with and the call, to ask which items stay.
struct ListScope {
    kind: ListKind,
    policy: Arc<PolicySet>,
    call: Call,
}

impl Exchange {
    /// Filters `message` if it is the result of this exchange's list call
    /// (ARCHITECTURE.md 5.1): the server's tool annotations are observed
    /// first, then each item stays exactly when the policy says it is
    /// visible. Counts what was removed in the record.
    fn filter_list(&mut self, message: &[u8]) -> Result<ListRewrite, filter::FilterError> {
        let Some(scope) = self.list.as_deref() else {
            return Ok(ListRewrite::NotTheResult);
        };
        let conn = &self.conn;
        let identity = conn.conn.identity.as_ref();
        let ctx = CallContext {
            agent: &conn.agent,
            cgroup_id: identity.map_or(0, |i| i.cgroup_id),
            pid: identity.map_or(0, |i| i.pid),
            uid: identity.map_or(0, |i| i.uid),
            server: conn.dst().normalized(),
            server_name: self.server_name.as_deref(),
            path: &self.summary.path,
            call: &scope.call,
        };
        let policy = &scope.policy;
        let rewrite = filter::filter_list_message(
            message,
            scope.kind,
            scope.call.id.as_ref(),
            |tools| policy.observe_tools(&ctx, tools),
            |name| policy.visible(&ctx, scope.kind, name),
        )?;
        if let ListRewrite::Filtered { hidden, .. } = &rewrite {
            self.summary.hidden += hidden;
        }
        Ok(rewrite)
    }

    /// The list result could not be filtered: the agent gets a JSON-RPC
    /// error (`code`) instead of the list, and the record says why.
    fn list_unfiltered(&mut self, code: i64, reason: String) -> Vec<u8> {
        let id = self.list.as_ref().and_then(|l| l.call.id.clone());
        let message = filter::unfiltered_error(id.as_ref(), code, &reason, self.audit_id);
        self.verdict = Verdict::Malformed;
        self.rule = filter::RULE_LIST_FILTER.to_owned();
        self.forced_outcome = Some(OutcomeStatus::Error {
            code,
            message: format!("mesh could not filter the list result: {reason}"),
        });
        self.reason = Some(reason);
        message
    }

    /// Settles the call's charge at `spend` (None: releases it) and notes it
    /// in the record. Returns the commit to await before the agent sees the
    /// end of its response; None when there was nothing to settle.
    fn settle(&mut self, spend: Option<Spend>, cut: bool) -> Option<Commit> {
        let charge = self.charge.take()?;
        let reserved = charge.reserved();
        let budget = self.summary.budget.get_or_insert_with(Default::default);
        budget.cut |= cut;
        let reservation = match charge {
            Charge::Call(r) => r,
            Charge::Llm(l) => l.reservation,
        };
        let Some(spend) = spend else {
            reservation.release();
            return None;
        };
        budget.settled = Some(spend_summary(&spend));
        if spend.tokens > reserved.tokens || spend.nano_usd > reserved.nano_usd {
            // The provider went past the bound it was sent: counted as
            // used, and said.
            warn!(agent = %self.conn.agent, ?reserved, ?spend, "usage exceeded its reservation");
        }
        if spend.nano_usd > 0 {
            self.conn
                .proxy
                .metrics
                .add_cost(&self.conn.agent, spend.nano_usd as f64 / 1e9);
        }
        Some(reservation.settle(spend))
    }

    /// Settles an LLM charge from the call's usage (none seen: released).
    fn settle_llm(&mut self, usage: Option<&Usage>, cut: bool) -> Option<Commit> {
        let spend = match &self.charge {
            Some(Charge::Llm(llm)) => usage.map(|u| charge::llm_spend(llm, u)),
            _ => return None,
        };
        self.settle(spend, cut)
    }

    fn describe(&mut self, call: &Call) {
        self.protocol = call.protocol;
        let s = &mut self.summary;
        s.direction = Some(call.direction);
        s.method = call.method.clone();
        s.name = call.name.clone();
        s.arguments = call.arguments.clone();
        s.jsonrpc_id = call.id.clone();
        s.session = call.session.clone();
        s.version = call.version.clone();
        if call.protocol == Protocol::Mcp && call.method == "tools/call" {
            let server = self
                .server_name
                .clone()
                .unwrap_or_else(|| self.conn.dst().to_string());
            let server = format!("{server}:{}", self.conn.dst().0.port());
            self.tool = Some((server, call.name.clone().unwrap_or_default()));
        }
        if let Some(llm) = &call.llm {
            let provider = llm.provider();
            s.provider = Some(provider.to_owned());
            self.llm = Some((provider, llm.model.clone()));
        }
    }

    fn refuse_malformed(mut self, e: &L7Error) -> Response<ProxyBody> {
        self.verdict = Verdict::Malformed;
        self.rule = "l7.parse".into();
        self.reason = Some(e.to_string());
        let audit_id = self.audit_id;
        self.respond_now(refuse::malformed(e, audit_id))
    }

    /// Answers without forwarding and writes the record.
    fn respond_now(mut self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        self.summary.http_status = resp.status().as_u16();
        self.summary.response_bytes = resp.body().size_hint().exact().unwrap_or(0);
        self.finish_now();
        resp
    }

    /// Writes the record of a call that got no response from its server.
    fn finish_now(self) {
        self.finish_with(None);
    }

    /// The call ended with `status`: builds its [`Outcome`] and writes it.
    fn finish(mut self, status: OutcomeStatus, is_error: bool, usage: Option<Usage>) {
        let (status, is_error) = match self.forced_outcome.take() {
            Some(forced) => (forced, false),
            None => (status, is_error),
        };
        let outcome = Outcome {
            status,
            is_error,
            request_bytes: self.summary.request_bytes,
            response_bytes: self.summary.response_bytes,
            latency: self.clock.elapsed(),
            usage,
        };
        self.finish_with(Some(outcome));
    }

    /// Writes the record and the metrics.
    fn finish_with(mut self, outcome: Option<Outcome>) {
        let latency = outcome
            .as_ref()
            .map_or_else(|| self.clock.elapsed(), |o| o.latency);
        let usage = match outcome {
            Some(o) => {
                apply_status(&mut self.summary, &o.status, o.is_error);
                o.usage
            }
            None => None,
        };
        // Not settled on the way (a response that broke off, an upstream
        // that failed): what was seen is spent, nothing else; nobody waits
        // for this commit.
        if self.charge.is_some() {
            let _unawaited = self.settle_llm(usage.as_ref(), false);
            let _unawaited = self.settle(None, false);
        }
        self.summary.latency_us = latency.as_micros() as u64;
        let proxy = &self.conn.proxy;
        let agent: &str = &self.conn.agent;
        let decision = crate::metrics::decision_label(self.verdict);
        proxy
            .metrics
            .record_request(Some(agent), self.protocol, decision);
        proxy
            .metrics
            .observe_duration(agent, self.protocol, latency.as_secs_f64());
        if let Some((server, tool)) = &self.tool {
            proxy
                .metrics
                .record_tool_call(agent, server, tool, decision, &self.rule);
        }
        if let (Some((provider, model)), Some(usage)) = (&self.llm, &usage) {
            proxy.metrics.add_tokens(agent, provider, model, usage);
        }
        if let Some(u) = usage {
            self.summary.usage = Some(UsageSummary {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cached_input_tokens: u.cached_input_tokens,
                estimated: u.estimated,
            });
        }
        let summary = std::mem::take(&mut self.summary);
        proxy.records.push(ConnectionRecord {
            reason: self.reason.take(),
            bytes_to_upstream: summary.request_bytes,
            bytes_to_client: summary.response_bytes,
            duration_ms: latency.as_millis() as u64,
            protocol: Some(self.protocol),
            server_name: self.server_name.take(),
            call: Some(summary),
            ..self.conn.conn.record(
                self.audit_id,
                self.start_unix_ms,
                self.verdict,
                std::mem::take(&mut self.rule),
            )
        });
    }
}

fn spend_summary(s: &Spend) -> SpendSummary {
    SpendSummary {
        tokens: s.tokens,
        usd: s.nano_usd as f64 / 1e9,
        calls: s.calls,
    }
}

/// The record's view of a charge, before it settles.
fn budget_summary(charge: &Charge) -> BudgetSummary {
    BudgetSummary {
        reserved: spend_summary(&charge.reserved()),
        settled: None,
        cut: false,
    }
}

fn apply_status(s: &mut CallSummary, status: &OutcomeStatus, is_error: bool) {
    s.is_error = is_error;
    s.outcome = Some(
        match status {
            OutcomeStatus::Result => "result",
            OutcomeStatus::Error { code, message } => {
                s.error_code = Some(*code);
                s.error_message = Some(message.clone());
                "error"
            }
            OutcomeStatus::Http { .. } => "http",
            OutcomeStatus::InputRequired => "input_required",
            OutcomeStatus::Cut => "cut",
        }
        .to_owned(),
    );
}

/// Reads outcomes from a response as it streams by.
enum Inspector {
    /// Nothing to read: bytes are counted.
    Count,
    /// A JSON-RPC response as one JSON body: a bounded copy, parsed at the end.
    JsonRpc {
        buf: Vec<u8>,
        limit: usize,
        over: bool,
    },
    /// JSON-RPC messages on an SSE stream (MCP 2025+ and A2A streaming).
    JsonRpcSse(Box<RpcStream>),
    /// The 2024-11-05 GET stream: the session's endpoint, then every response.
    Legacy(Box<RpcStream>),
    /// An LLM response: JSON (bounded copy) or SSE, into a usage tracker.
    Llm(Box<LlmInspect>),
}

struct RpcStream {
    parser: SseParser,
    /// The id of the call this stream answers (absent for the GET streams).
    call_id: Option<RpcId>,
    outcome: Option<(OutcomeStatus, bool)>,
    session: Option<Arc<str>>,
    generation: Option<McpGeneration>,
}

struct LlmInspect {
    tracker: UsageTracker,
    sse: Option<SseParser>,
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Inspector {
    fn for_response(call: &Call, resp: &hyper::http::response::Parts, limit: usize) -> Inspector {
        let content_type = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let sse = content_type.starts_with("text/event-stream");
        let json = content_type.starts_with("application/json") || content_type.contains("+json");
        match call.protocol {
            Protocol::Llm => match &call.llm {
                Some(llm) => Inspector::Llm(Box::new(LlmInspect {
                    tracker: UsageTracker::new(llm.api),
                    sse: sse.then(|| SseParser::new(MAX_SSE_EVENT_BYTES)),
                    buf: Vec::new(),
                    limit,
                    over: false,
                })),
                None => Inspector::Count,
            },
            Protocol::Mcp | Protocol::A2a => {
                let generation = call.mcp.as_ref().map(|m| m.generation);
                let stream = |call_id| {
                    Box::new(RpcStream {
                        parser: SseParser::new(MAX_SSE_EVENT_BYTES),
                        call_id,
                        outcome: None,
                        session: call.session.as_deref().map(Arc::from),
                        generation,
                    })
                };
                if sse && generation == Some(McpGeneration::HttpSse) && call.id.is_none() {
                    Inspector::Legacy(stream(None))
                } else if sse {
                    Inspector::JsonRpcSse(stream(call.id.clone()))
                } else if json {
                    Inspector::JsonRpc {
                        buf: Vec::new(),
                        limit,
                        over: false,
                    }
                } else {
                    Inspector::Count
                }
            }
            Protocol::Http | Protocol::Tcp | Protocol::Tls => Inspector::Count,
        }
    }
}

fn keep_copy(buf: &mut Vec<u8>, limit: usize, over: &mut bool, data: &[u8]) {
    if *over {
        return;
    }
    if buf.len() + data.len() > limit {
        *over = true;
        buf.clear();
        buf.shrink_to_fit();
    } else {
        buf.extend_from_slice(data);
    }
}

/// A response body that passes every frame through unchanged while its
/// inspector reads it, and writes the call's record when it ends (or is
/// dropped early: the stream was cut).
pub struct InspectBody {
    inner: Incoming,
    inspector: Inspector,
    exchange: Option<Exchange>,
    bytes: u64,
    /// For 2024-11-05 GET streams: refusals to inject at event boundaries.
    injector: Option<Injector>,
    at_boundary: bool,
    /// For list calls answered on an event stream: the result is filtered.
    rewriter: Option<Box<SseListRewriter>>,
    /// For budgeted LLM calls: the response passes through the gate.
    gate: Option<Box<BudgetGate>>,
}

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// A response body that runs `then` once it is over (sent whole, or
/// dropped by a connection that went away).
struct AfterBody {
    inner: ProxyBody,
    then: Option<QuarantineWhenSent>,
}

/// Quarantines an agent whose budget says so, shortly after its refusal
/// was sent ([`QUARANTINE_AFTER_REFUSAL`]).
struct QuarantineWhenSent {
    governor: Arc<Governor>,
    agent: Arc<str>,
    rule: String,
}

impl QuarantineWhenSent {
    fn apply(self) {
        let QuarantineWhenSent {
            governor,
            agent,
            rule,
        } = self;
        let quarantine = move || match governor.set_quarantine(&agent, true) {
            Ok(_) => warn!(agent = %agent, rule, "budget exhausted: agent quarantined"),
            Err(e) => {
                warn!(agent = %agent, rule, error = %e, "budget exhausted; quarantine failed")
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(QUARANTINE_AFTER_REFUSAL).await;
                    quarantine();
                });
            }
            Err(_) => quarantine(),
        }
    }
}

impl Drop for AfterBody {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then.apply();
        }
    }
}

impl Body for AfterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(then) = self.then.take() {
                then.apply();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A budgeted LLM response on its way to the agent. Event streams go out
/// whole event by event, so one can end cleanly at the reservation's output
/// bound; the response's end (its final event, or the last bytes of a JSON
/// body, held until then) goes out only once the call's settlement is
/// durable.
struct BudgetGate {
    /// SSE: the stream in whole events. None: a JSON body.
    events: Option<SseEventSplitter>,
    output_bound: u64,
    /// The stream's end, in the API's framing, for a cut.
    terminator: &'static [u8],
    /// Ready to go out, in order.
    out: VecDeque<Bytes>,
    /// A JSON body, held until settled. None once it outgrew the inspection
    /// limit (it then streams on and settles, unheld, at its end).
    held: Option<Vec<Bytes>>,
    /// The settlement's commit: nothing goes out while it is pending.
    commit: Option<Commit>,
    settled: bool,
    /// Nothing more comes from upstream: the body ends once `out` drains.
    done: bool,
}

impl BudgetGate {
    fn new(sse: bool, api: LlmApi, output_bound: u64) -> BudgetGate {
        BudgetGate {
            events: sse.then(SseEventSplitter::new),
            output_bound,
            terminator: match api {
                LlmApi::ChatCompletions => b"data: [DONE]\n\n",
                LlmApi::Messages => b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                // A Responses stream has no end event that is not a whole
                // response object: it ends at an event boundary.
                LlmApi::Responses => b"",
            },
            out: VecDeque::new(),
            held: (!sse).then(Vec::new),
            commit: None,
            settled: false,
            done: false,
        }
    }
}

struct Injector {
    sessions: Arc<Sessions>,
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
    registered: Option<(SocketAddr, Arc<str>)>,
}

impl InspectBody {
    fn new(
        inner: Incoming,
        inspector: Inspector,
        exchange: Option<Exchange>,
        sessions: Option<Arc<Sessions>>,
    ) -> InspectBody {
        InspectBody {
            inner,
            inspector,
            exchange,
            bytes: 0,
            injector: sessions.map(|sessions| Injector {
                sessions,
                rx: None,
                registered: None,
            }),
            at_boundary: true,
            rewriter: None,
            gate: None,
        }
    }

    fn tracker(&self) -> Option<&UsageTracker> {
        match &self.inspector {
            Inspector::Llm(llm) => Some(&llm.tracker),
            _ => None,
        }
    }

    /// Data from upstream for the budget gate.
    fn gate_data(&mut self, mut gate: Box<BudgetGate>, data: Bytes) -> Box<BudgetGate> {
        let Some(splitter) = gate.events.as_mut() else {
            self.inspect(&data);
            let over = matches!(&self.inspector, Inspector::Llm(l) if l.over);
            match gate.held.as_mut() {
                Some(held) if !over => held.push(data),
                Some(held) => {
                    let held = std::mem::take(held);
                    gate.out.extend(held);
                    gate.out.push_back(data);
                    gate.held = None;
                }
                None => gate.out.push_back(data),
            }
            return gate;
        };
        let mut events = Vec::new();
        splitter.push(&data, |event| events.push(Bytes::copy_from_slice(event)));
        for event in events {
            self.gate_event(&mut gate, event);
        }
        gate
    }

    /// One whole SSE event: forwarded, or the stream is cut before it.
    fn gate_event(&mut self, gate: &mut BudgetGate, event: Bytes) {
        if gate.done {
            return; // cut: nothing more goes out
        }
        if gate.settled {
            self.inspect(&event);
            gate.out.push_back(event);
            return;
        }
        let before = self.tracker().cloned();
        self.inspect(&event);
        let Some(tracker) = self.tracker() else {
            gate.out.push_back(event);
            return;
        };
        if tracker.output_so_far() > gate.output_bound {
            // This event would take the output past what was reserved: the
            // stream ends before it, cleanly.
            let usage = before.clone().and_then(|t| t.finish(false));
            if let (Inspector::Llm(llm), Some(before)) = (&mut self.inspector, before) {
                llm.tracker = before;
            }
            self.bytes =
                self.bytes.saturating_sub(event.len() as u64) + gate.terminator.len() as u64;
            if let Some(ex) = self.exchange.as_mut() {
                ex.reason = Some(format!(
                    "stream ended by mesh at its budget reservation of {} output tokens",
                    gate.output_bound
                ));
                gate.commit = ex.settle_llm(usage.as_ref(), true);
            }
            gate.settled = true;
            gate.done = true;
            if !gate.terminator.is_empty() {
                gate.out.push_back(Bytes::from_static(gate.terminator));
            }
            return;
        }
        if tracker.saw_end() {
            let usage = tracker.clone().finish(true);
            if let Some(ex) = self.exchange.as_mut() {
                gate.commit = ex.settle_llm(usage.as_ref(), false);
            }
            gate.settled = true;
        }
        gate.out.push_back(event);
    }

    /// Upstream ended: settle from everything seen, release what was held.
    fn gate_end(&mut self, gate: &mut BudgetGate) {
        gate.done = true;
        if let Some(splitter) = gate.events.as_mut() {
            let rest = splitter.finish();
            if !rest.is_empty() && !gate.settled {
                self.inspect(&rest);
                gate.out.push_back(Bytes::from(rest));
            }
        }
        if !gate.settled {
            let mut usage = None;
            if let Inspector::Llm(llm) = &mut self.inspector {
                if llm.sse.is_none() && !llm.over && !llm.buf.is_empty() {
                    let body = std::mem::take(&mut llm.buf);
                    llm.tracker.feed_json(&body);
                }
                let ended = llm.sse.is_none() || llm.tracker.saw_end();
                usage = llm.tracker.clone().finish(ended);
            }
            if let Some(ex) = self.exchange.as_mut() {
                gate.commit = ex.settle_llm(usage.as_ref(), false);
            }
            gate.settled = true;
        }
        if let Some(held) = gate.held.take() {
            gate.out.extend(held);
        }
    }

    /// [`Body::poll_frame`] for a gated response.
    fn poll_gated(
        &mut self,
        mut gate: Box<BudgetGate>,
        cx: &mut Context<'_>,
    ) -> (Box<BudgetGate>, Poll<Option<FrameResult>>) {
        loop {
            if let Some(commit) = gate.commit.as_mut() {
                match Pin::new(commit).poll(cx) {
                    Poll::Pending => return (gate, Poll::Pending),
                    Poll::Ready(result) => {
                        if let Err(e) = result {
                            warn!(error = %e, "budget settlement not persisted");
                        }
                        gate.commit = None;
                    }
                }
            }
            if let Some(data) = gate.out.pop_front() {
                return (gate, Poll::Ready(Some(Ok(Frame::data(data)))));
            }
            if gate.done {
                self.conclude(true);
                return (gate, Poll::Ready(None));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing of the body: dropped.
                    if let Ok(data) = frame.into_data() {
                        gate = self.gate_data(gate, data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.conclude(false);
                    return (gate, Poll::Ready(Some(Err(e.into()))));
                }
                Poll::Ready(None) => self.gate_end(&mut gate),
                Poll::Pending => return (gate, Poll::Pending),
            }
        }
    }

    fn boxed(self) -> ProxyBody {
        http_body_util::BodyExt::boxed(self)
    }

    fn dst(&self) -> Option<SocketAddr> {
        self.exchange.as_ref().map(|e| e.conn.dst().0)
    }

    fn inspect(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.at_boundary =
            data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n") || data.ends_with(b"\r\r");
        let dst = self.dst();
        let proxy_sessions = self
            .exchange
            .as_ref()
            .map(|e| e.conn.proxy.sessions.clone());
        match &mut self.inspector {
            Inspector::Count => {}
            Inspector::JsonRpc { buf, limit, over } => keep_copy(buf, *limit, over, data),
            Inspector::JsonRpcSse(stream) | Inspector::Legacy(stream) => {
                let legacy = stream.call_id.is_none();
                let RpcStream {
                    parser,
                    call_id,
                    outcome,
                    session,
                    generation,
                } = &mut **stream;
                let mut new_session: Option<Arc<str>> = None;
                let result = parser.feed(data, |ev: &SseEvent<'_>| {
                    if legacy && ev.event == Some("endpoint") {
                        new_session = mcp::endpoint_session(ev.data).map(Arc::from);
                        return;
                    }
                    if ev.data.is_empty() {
                        return; // a priming event
                    }
                    let Ok(message) = jsonrpc::parse_message(ev.data.as_bytes()) else {
                        return;
                    };
                    match &message {
                        Message::Response {
                            id,
                            status,
                            is_error,
                        } => {
                            if call_id.is_some() && id.as_ref() == call_id.as_ref() {
                                *outcome = Some((status.clone(), *is_error));
                            } else if let (Some(sessions), Some(dst), Some(session), Some(id)) =
                                (&proxy_sessions, dst, session.as_ref(), id.as_ref())
                            {
                                // 2024-11-05: the response to a POSTed call.
                                sessions.complete(
                                    &PendingKey {
                                        dst,
                                        session: session.clone(),
                                        direction: Direction::ClientToServer,
                                        id: id.clone(),
                                    },
                                    status.clone(),
                                    *is_error,
                                );
                            }
                        }
                        Message::Request { .. } => {
                            let Some(call) = mcp::call_from_message(
                                &message,
                                Direction::ServerToClient,
                                session.as_deref(),
                                generation.unwrap_or(McpGeneration::Sessions),
                            ) else {
                                return;
                            };
                            if let (Some(sessions), Some(dst), Some(session), Some(id)) =
                                (&proxy_sessions, dst, session.as_ref(), call.id.clone())
                            {
                                sessions.insert_pending(
                                    PendingKey {
                                        dst,
                                        session: session.clone(),
                                        direction: Direction::ServerToClient,
                                        id,
                                    },
                                    Pending::ServerRequest {
                                        method: call.method,
                                        name: call.name,
                                        seen: Instant::now(),
                                    },
                                );
                            }
                        }
                        Message::Notification { .. } => {}
                    }
                });
                if let Err(e) = result {
                    debug!(error = %e, "SSE inspection stopped; bytes still pass");
                    self.inspector = Inspector::Count;
                    return;
                }
                if let Some(s) = new_session {
                    *session = Some(s.clone());
                    if let (Some(inj), Some(dst)) = (&mut self.injector, dst) {
                        inj.rx = Some(inj.sessions.register_stream(dst, s.clone()));
                        inj.registered = Some((dst, s));
                    }
                }
            }
            Inspector::Llm(llm) => {
                let LlmInspect {
                    tracker,
                    sse,
                    buf,
                    limit,
                    over,
                } = &mut **llm;
                match sse {
                    Some(parser) => {
                        if parser
                            .feed(data, |ev: &SseEvent<'_>| {
                                tracker.feed_sse_event(ev.event, ev.data)
                            })
                            .is_err()
                        {
                            *sse = None;
                            *over = true;
                        }
                    }
                    None => keep_copy(buf, *limit, over, data),
                }
            }
        }
    }

    /// The response ended (`complete`) or was cut: writes the record.
    fn conclude(&mut self, complete: bool) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        ex.summary.response_bytes = self.bytes;
        let http_status = ex.summary.http_status;
        let http_ok = (200..300).contains(&http_status);
        let http_outcome = if http_ok {
            OutcomeStatus::Result
        } else {
            OutcomeStatus::Http {
                status: http_status,
            }
        };
        let (status, is_error, usage) =
            match std::mem::replace(&mut self.inspector, Inspector::Count) {
                Inspector::Count => (http_outcome, false, None),
                Inspector::JsonRpc { buf, over, .. } => {
                    if over || buf.is_empty() {
                        (http_outcome, false, None)
                    } else {
                        match jsonrpc::parse_message(&buf) {
                            Ok(Message::Response {
                                status, is_error, ..
                            }) => (status, is_error, None),
                            _ => (http_outcome, false, None),
                        }
                    }
                }
                Inspector::JsonRpcSse(mut stream) | Inspector::Legacy(mut stream) => {
                    let cut = stream.parser.finish() || !complete;
                    match stream.outcome.take() {
                        Some((status, is_error)) => (status, is_error, None),
                        None if cut => (OutcomeStatus::Cut, false, None),
                        None => (http_outcome, false, None),
                    }
                }
                Inspector::Llm(llm) => {
                    let LlmInspect {
                        mut tracker,
                        sse,
                        buf,
                        over,
                        ..
                    } = *llm;
                    if sse.is_none() && !over && !buf.is_empty() {
                        tracker.feed_json(&buf);
                    }
                    let ended = complete && (sse.is_none() || tracker.saw_end());
                    let usage = tracker.finish(ended);
                    let status = if !ended && http_ok {
                        OutcomeStatus::Cut
                    } else {
                        http_outcome
                    };
                    (status, false, usage)
                }
            };
        ex.finish(status, is_error, usage);
    }
}

impl Drop for InspectBody {
    fn drop(&mut self) {
        if let Some(inj) = &self.injector {
            if let Some((dst, session)) = &inj.registered {
                inj.sessions.unregister_stream(*dst, session);
            }
        }
        // Dropped before its end: the agent went away or the stream broke.
        self.conclude(false);
    }
}

impl Body for InspectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(gate) = this.gate.take() {
            let (gate, poll) = this.poll_gated(gate, cx);
            this.gate = Some(gate);
            return poll;
        }
        // Injected events (refusals for a 2024-11-05 session) go out between
        // events, never inside one.
        if this.at_boundary {
            if let Some(rx) = this.injector.as_mut().and_then(|i| i.rx.as_mut()) {
                if let Poll::Ready(Some(event)) = rx.poll_recv(cx) {
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
            }
        }
        loop {
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.inspect(data);
                    }
                    if let Some(rewriter) = this.rewriter.as_mut() {
                        if let Ok(data) = frame.into_data() {
                            let out = rewriter.rewrite(data, this.exchange.as_mut());
                            if out.is_empty() {
                                continue; // an event still held
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        // Trailers: nothing of the stream's bytes.
                        continue;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conclude(false);
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    if let Some(rest) = this.rewriter.as_mut().and_then(|r| r.flush()) {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    this.conclude(true);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(gate) = &self.gate {
            return gate.done && gate.out.is_empty() && gate.commit.is_none();
        }
        self.rewriter.as_ref().is_none_or(|r| r.flushed) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.rewriter.is_some() || self.gate.as_ref().is_some_and(|g| g.events.is_some()) {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

/// Identifies a call whose outcome arrives on another HTTP request. Ids are
/// unique per session and direction only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    dst: SocketAddr,
    session: Arc<str>,
    direction: Direction,
    id: RpcId,
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
    fn insert_pending(&self, key: PendingKey, pending: Pending) {
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

    fn take_pending(&self, key: &PendingKey) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key).map(|(_, p)| p)
    }

    fn complete(&self, key: &PendingKey, status: OutcomeStatus, is_error: bool) {
        if let Some(Pending::Call(ex)) = self.take_pending(key) {
            ex.finish(status, is_error, None);
        }
    }

    fn register_stream(
        &self,
        dst: SocketAddr,
        session: Arc<str>,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.insert((dst, session), tx);
        rx
    }

    fn unregister_stream(&self, dst: SocketAddr, session: &Arc<str>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.remove(&(dst, session.clone()));
    }

    /// Queues an event for a session's GET stream; false when the session
    /// has no open stream through this daemon.
    fn inject(&self, dst: SocketAddr, session: &str, event: Bytes) -> bool {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams
            .get(&(dst, Arc::from(session)))
            .is_some_and(|tx| tx.send(event).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    fn call(protocol: Protocol) -> Call {
        Call {
            protocol,
            direction: Direction::ClientToServer,
            method: String::new(),
            name: None,
            arguments: None,
            id: None,
            session: None,
            version: None,
            mcp: None,
            a2a: None,
            llm: None,
        }
    }

    async fn body_json(resp: Response<ProxyBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_llm_refusal_is_a_403_in_the_providers_error_shape() {
        let mut c = call(Protocol::Llm);
        c.method = "messages".into();
        c.llm = Some(crate::l7::llm::LlmRequest {
            api: LlmApi::Messages,
            model: "claude-x".into(),
            max_output_tokens: None,
            stream: false,
            include_usage: true,
            input_bytes: 10,
        });
        let resp = refusal(
            &c,
            &HeaderMap::new(),
            StatusCode::FORBIDDEN,
            "llm[anthropic].models",
            "model claude-x is not allowed",
            7,
        );
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let v = body_json(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("llm[anthropic].models"));
        assert_eq!(v["mesh"]["audit_id"], 7);

        c.llm = c.llm.map(|l| crate::l7::llm::LlmRequest {
            api: LlmApi::ChatCompletions,
            ..l
        });
        let resp = refusal(&c, &HeaderMap::new(), StatusCode::FORBIDDEN, "r", "x", 8);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["type"], "permission_denied");
        assert_eq!(v["error"]["mesh"]["rule"], "r");
    }

    #[tokio::test]
    async fn an_a2a_refusal_is_a_jsonrpc_error_with_the_callers_id() {
        let mut c = call(Protocol::A2a);
        c.method = "SendMessage".into();
        c.id = Some(RpcId::String("req-1".into()));
        let resp = refusal(
            &c,
            &headers(&[("accept", "application/json")]),
            StatusCode::FORBIDDEN,
            "a2a.undeclared",
            "no a2a entry for 127.0.0.2:9000",
            5,
        );
        assert_eq!(resp.status(), StatusCode::OK);
        let v = body_json(resp).await;
        assert_eq!(v["id"], "req-1");
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(
            v["error"]["message"],
            "refused by mesh policy rule a2a.undeclared"
        );
        assert_eq!(v["error"]["data"]["rule"], "a2a.undeclared");
        assert_eq!(v["error"]["data"]["audit_id"], 5);
    }

    #[test]
    fn hop_by_hop_fields_are_stripped() {
        let mut h = headers(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type"]);

        // Fields the Connection header names go too; `te: trailers` stays.
        let mut h = headers(&[
            ("connection", "close, x-trace"),
            ("x-trace", "1"),
            ("x-kept", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["te", "x-kept"]);

        let mut h = headers(&[("te", "gzip"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }
}
