//! Refusals as each protocol expects them (ARCHITECTURE.md section 6): a
//! JSON-RPC error in the framing the client asked for, or an HTTP error in
//! the provider's shape. Agents and their SDKs then fail the one call, with
//! the rule in the message, instead of seeing a broken connection.
//!
//! Also where a refusal goes out: a 2024-11-05 call's on its session's GET
//! stream, and a budget's `on_exhaust` once the refusal was sent.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Body, SizeHint},
    header::{self, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use serde_json::json;
use tracing::warn;

use super::{exchange::Exchange, inspect::FrameResult, sessions, HttpConn};
use crate::{
    budget::charge::{BudgetRefusal, RefusalKind},
    config::QUARANTINE_AFTER_REFUSAL,
    l7::{llm::LlmApi, request::Envelope, Call, L7Error, Protocol, RpcId},
    policy::{Decision, OnExhaust},
    proxy::{
        body::ReadError,
        pool::{BoxError, ProxyBody, UpstreamError},
    },
    records::Verdict,
    state::Governor,
};

/// JSON-RPC error code of a policy refusal.
pub const POLICY_REFUSAL_CODE: i64 = -32001;

/// How the client wants JSON-RPC answers framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// One `event: message` SSE event carrying the JSON-RPC message.
    Sse,
}

impl Framing {
    /// JSON when the client accepts it (MCP clients send
    /// `Accept: application/json, text/event-stream`), SSE when it accepts
    /// only an event stream or asked for a stream (A2A streaming methods).
    pub fn for_request(headers: &HeaderMap, wants_stream: bool) -> Framing {
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let json =
            accept.is_empty() || accept.contains("application/json") || accept.contains("*/*");
        let sse = accept.contains("text/event-stream");
        if sse && (wants_stream || !json) {
            Framing::Sse
        } else {
            Framing::Json
        }
    }
}

/// The section 6 refusal of a JSON-RPC call: HTTP 200 and an error object
/// naming the rule.
pub fn jsonrpc_refusal(
    id: Option<&RpcId>,
    rule: &str,
    reason: &str,
    audit_id: u64,
    framing: Framing,
) -> Response<ProxyBody> {
    let message = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": POLICY_REFUSAL_CODE,
            "message": format!("refused by mesh policy rule {rule}"),
            "data": { "rule": rule, "reason": reason, "audit_id": audit_id },
        },
    });
    jsonrpc_response(StatusCode::OK, &message, framing)
}

/// A request mesh could not parse where the parse decides policy: never
/// forwarded, answered with the error's status and JSON-RPC code, the
/// request's id when it could be read, and for A2A with HTTP 200 (as a2a-sdk
/// answers envelope errors).
pub fn malformed(error: &L7Error, envelope: &Envelope, audit_id: u64) -> Response<ProxyBody> {
    let message = json!({
        "jsonrpc": "2.0",
        "id": envelope.id,
        "error": {
            "code": error.jsonrpc_code(),
            "message": error.message_for(envelope.protocol),
            "data": { "audit_id": audit_id },
        },
    });
    let status = match (envelope.protocol, error) {
        (_, L7Error::TooLarge { .. } | L7Error::Path(_)) => error.http_status(),
        (Some(Protocol::A2a), _) => 200,
        _ => error.http_status(),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    jsonrpc_response(status, &message, Framing::Json)
}

/// An LLM API refusal in the provider's error shape: 403 for policy, 429 for
/// budgets, so SDKs raise their usual typed errors.
pub fn llm_refusal(
    api: LlmApi,
    status: StatusCode,
    rule: &str,
    reason: &str,
    audit_id: u64,
) -> Response<ProxyBody> {
    let message = format!("refused by mesh policy rule {rule}: {reason}");
    let mesh = json!({ "rule": rule, "reason": reason, "audit_id": audit_id });
    let body = match api {
        LlmApi::Messages => json!({
            "type": "error",
            "error": {
                "type": if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "permission_error" },
                "message": message,
            },
            "mesh": mesh,
        }),
        LlmApi::ChatCompletions | LlmApi::Responses => json!({
            "error": {
                "message": message,
                "type": if status == StatusCode::TOO_MANY_REQUESTS { "insufficient_quota" } else { "permission_denied" },
                "param": null,
                "code": if status == StatusCode::TOO_MANY_REQUESTS { "mesh_budget" } else { "mesh_policy" },
                "mesh": mesh,
            },
        }),
    };
    json_response(status, &body)
}

/// A plain HTTP refusal.
pub fn http_refusal(
    status: StatusCode,
    rule: &str,
    reason: &str,
    audit_id: u64,
) -> Response<ProxyBody> {
    json_response(
        status,
        &json!({ "error": { "message": format!("refused by mesh policy rule {rule}: {reason}"),
                 "rule": rule, "reason": reason, "audit_id": audit_id } }),
    )
}

/// 502 when the destination could not be reached or broke mid-request.
pub fn bad_gateway(reason: &str, audit_id: u64) -> Response<ProxyBody> {
    json_response(
        StatusCode::BAD_GATEWAY,
        &json!({ "error": { "message": format!("mesh could not reach the destination: {reason}"), "audit_id": audit_id } }),
    )
}

/// One SSE event carrying a JSON-RPC message (for injecting into a stream).
pub fn sse_event(message: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn jsonrpc_response(
    status: StatusCode,
    message: &serde_json::Value,
    framing: Framing,
) -> Response<ProxyBody> {
    match framing {
        Framing::Json => json_response(status, message),
        Framing::Sse => build(status, "text/event-stream", sse_event(message)),
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    build(status, "application/json", Bytes::from(body.to_string()))
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The refusal a call gets, in its protocol's shape.
pub(super) fn refusal(
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
            jsonrpc_refusal(call.id.as_ref(), rule, reason, audit_id, framing)
        }
        Protocol::Llm => {
            let api = call.llm.as_ref().map_or(LlmApi::ChatCompletions, |l| l.api);
            llm_refusal(api, status, rule, reason, audit_id)
        }
        Protocol::Http | Protocol::Tcp | Protocol::Tls => {
            http_refusal(status, rule, reason, audit_id)
        }
    }
}

/// A call the policy does not let through.
pub(super) struct PolicyRefusal {
    verdict: Verdict,
    rule: Arc<str>,
    reason: String,
}

impl PolicyRefusal {
    /// The rule it is refused under.
    pub(super) fn rule(&self) -> &str {
        &self.rule
    }

    /// None when the decision lets the call through.
    pub(super) fn of(decision: Decision) -> Option<PolicyRefusal> {
        match decision {
            Decision::Allow { .. } => None,
            Decision::Refuse { rule, reason } => Some(PolicyRefusal {
                verdict: Verdict::RefusedPolicy,
                rule,
                reason,
            }),
            Decision::Hold { rule, reason } => Some(PolicyRefusal {
                verdict: Verdict::Held,
                rule,
                reason: format!("approval required: {reason}"),
            }),
        }
    }
}

/// The HTTP status of a budget refusal: 429 when the budget is used up
/// (it may fit later), 403 when the call cannot be costed (it never will).
fn budget_status(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::Exhausted => StatusCode::TOO_MANY_REQUESTS,
        RefusalKind::Unpriced => StatusCode::FORBIDDEN,
    }
}

/// The JSON-RPC error a list call gets when its result could not be
/// filtered: the caller's id, `code` (-32600 too large, -32700 unreadable)
/// and the audit id, so one call fails instead of leaking the list.
pub fn unfiltered_error(
    call_id: Option<&RpcId>,
    code: i64,
    reason: &str,
    audit_id: u64,
) -> Vec<u8> {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": call_id,
        "error": {
            "code": code,
            "message": format!("mesh could not filter the list result: {reason}"),
            "data": { "rule": RULE_LIST_FILTER, "reason": reason, "audit_id": audit_id },
        },
    })
    .to_string()
    .into_bytes()
}

/// Rule named in records and errors when a list result could not be filtered.
pub const RULE_LIST_FILTER: &str = "mcp.list_filter";
/// The rule a request body in a content-encoding is refused under.
pub const RULE_CONTENT_ENCODING: &str = "l7.content_encoding";

impl Exchange {
    /// The request body could not be read: too large (the parse's refusal)
    /// or the client failed mid-body (400).
    pub(super) fn refuse_unread(mut self, e: ReadError, limit: usize) -> Response<ProxyBody> {
        match e {
            ReadError::TooLarge => self.refuse_malformed(&L7Error::TooLarge { limit }),
            ReadError::Encoded(coding) => {
                let reason = format!(
                    "the request body is sent with content-encoding {coding:?}, which the \
                     mesh does not decode before deciding; send it uncompressed"
                );
                self.verdict = Verdict::Malformed;
                self.rule = RULE_CONTENT_ENCODING.into();
                let audit_id = self.audit_id;
                let resp = http_refusal(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    RULE_CONTENT_ENCODING,
                    &reason,
                    audit_id,
                );
                self.reason = Some(reason);
                self.respond_now(resp)
            }
            ReadError::Client(e) => {
                self.verdict = Verdict::Malformed;
                self.reason = Some(format!("reading the request body: {e}"));
                self.rule = "http".into();
                let audit_id = self.audit_id;
                self.respond_now(http_refusal(
                    StatusCode::BAD_REQUEST,
                    "http",
                    "the request body could not be read",
                    audit_id,
                ))
            }
        }
    }

    /// The destination could not be reached or broke mid-request: 502.
    pub(super) fn upstream_failed(mut self, e: &UpstreamError) -> Response<ProxyBody> {
        self.verdict = Verdict::UpstreamFailed;
        self.reason = Some(e.to_string());
        let audit_id = self.audit_id;
        self.respond_now(bad_gateway(&e.to_string(), audit_id))
    }
}

impl HttpConn {
    /// A call the policy refuses or holds: 403 in its protocol's shape.
    pub(super) fn refuse_decision(
        &self,
        mut ex: Exchange,
        call: &Call,
        headers: &HeaderMap,
        refused: PolicyRefusal,
    ) -> Response<ProxyBody> {
        let PolicyRefusal {
            verdict,
            rule,
            reason,
        } = refused;
        ex.verdict = verdict;
        ex.reason = Some(reason.clone());
        let resp = refusal(
            call,
            headers,
            StatusCode::FORBIDDEN,
            &rule,
            &reason,
            ex.audit_id,
        );
        self.refuse_in_stream(ex, call, resp)
    }

    /// A call its budgets cannot take: 429 (LLM, HTTP) or the JSON-RPC
    /// refusal (MCP, A2A), naming the budget; then what the budget's
    /// `on_exhaust` asks for.
    pub(super) fn refuse_budget(
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
        let status = budget_status(kind);
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
        if sessions::is_legacy(call) {
            if let (Some(session), Some(id)) = (call.session.as_deref(), call.id.as_ref()) {
                let message = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": POLICY_REFUSAL_CODE,
                        "message": format!("refused by mesh policy rule {}", ex.rule),
                        "data": { "rule": ex.rule, "reason": ex.reason, "audit_id": ex.audit_id },
                    },
                });
                let stream = (self.agent.clone(), self.dst().0, Arc::from(session));
                if self.proxy.sessions.inject(&stream, sse_event(&message)) {
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
}

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

#[cfg(test)]
mod tests;
