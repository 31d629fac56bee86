//! One request's exchange: what is known of the call as the pipeline learns
//! it, and the record and metrics written once its outcome is known.
use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use hyper::{body::Body as _, http::request::Parts, Response};

use super::{list_filter::ListScope, HttpConn};
use crate::proxy::limits::{AtLimit, RequestSlot};
use crate::{
    budget::charge::Charge,
    l7::{llm::Usage, request::Envelope, Call, L7Error, Outcome, OutcomeStatus, Protocol},
    policy::CallContext,
    proxy::pool::ProxyBody,
    records::{unix_ms, CallSummary, ConnectionRecord, UsageSummary, Verdict},
};

/// What is needed to write a request's record once its outcome is known.
pub struct Exchange {
    pub(super) conn: Arc<HttpConn>,
    pub(super) audit_id: u64,
    start_unix_ms: u64,
    pub(super) clock: Instant,
    pub(super) protocol: Protocol,
    pub(super) server_name: Option<String>,
    pub(super) summary: CallSummary,
    /// `(server, tool)` of a tools/call, for `mesh_tool_calls_total`.
    tool: Option<(String, String)>,
    /// `(provider, model)` of an LLM call, for `mesh_llm_tokens_total`.
    llm: Option<(&'static str, String)>,
    pub(super) verdict: Verdict,
    pub(super) rule: String,
    pub(super) reason: Option<String>,
    /// For `tools/list`, `resources/list`, `prompts/list`: what filtering
    /// their result needs.
    pub(super) list: Option<Box<ListScope>>,
    /// The outcome the agent got when mesh answered in the server's place
    /// (a list result that could not be filtered).
    pub(super) forced_outcome: Option<OutcomeStatus>,
    /// What the call reserved against its budgets, until it settles.
    pub(super) charge: Option<Charge>,
    /// The agent's in-flight slot, given back when the record is written
    /// (the response ended).
    slot: Option<RequestSlot>,
}

impl Exchange {
    /// The exchange of a request that arrived at `clock` (`started`): a
    /// plain HTTP request until classified.
    pub(super) fn begin(
        conn: &Arc<HttpConn>,
        parts: &Parts,
        clock: Instant,
        started: SystemTime,
    ) -> Exchange {
        let server_name = conn.server_name(parts);
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let audit_id = conn.proxy.records.next_id();
        Exchange {
            conn: conn.clone(),
            audit_id,
            start_unix_ms: unix_ms(started),
            clock,
            protocol: Protocol::Http,
            server_name,
            summary: CallSummary {
                http_method: parts.method.as_str().to_owned(),
                path,
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
            slot: None,
        }
    }

    /// Takes one of the agent's in-flight slots for this request; at the
    /// agent's bound, the request is refused (429) and recorded.
    pub(super) fn hold_slot(&mut self) -> Result<(), AtLimit> {
        if let Some(conn_slot) = &self.conn.conn.slot {
            self.slot = Some(conn_slot.request()?);
        }
        Ok(())
    }

    pub(super) fn refuse_at_limit(mut self, at: &AtLimit) -> Response<ProxyBody> {
        self.verdict = Verdict::RefusedPolicy;
        self.rule = at.rule().into();
        self.reason = Some(at.to_string());
        let audit_id = self.audit_id;
        let mut resp = super::refuse::http_refusal(
            hyper::StatusCode::TOO_MANY_REQUESTS,
            at.rule(),
            &at.to_string(),
            audit_id,
        );
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(1),
        );
        self.respond_now(resp)
    }

    /// What a decision about `call` in this exchange may depend on.
    pub(super) fn call_context<'a>(&'a self, call: &'a Call) -> CallContext<'a> {
        let conn = &self.conn;
        let identity = conn.conn.identity.as_ref();
        CallContext {
            agent: &conn.agent,
            cgroup_id: identity.map_or(0, |i| i.cgroup_id),
            pid: identity.map_or(0, |i| i.pid),
            uid: identity.map_or(0, |i| i.uid),
            server: conn.dst().normalized(),
            server_name: self.server_name.as_deref(),
            path: &self.summary.path,
            call,
        }
    }

    pub(super) fn describe(&mut self, call: &Call) {
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

    pub(super) fn refuse_malformed(self, e: &L7Error) -> Response<ProxyBody> {
        self.refuse_malformed_as(e, &Envelope::default())
    }

    /// [`Exchange::refuse_malformed`], answering as the request's own
    /// envelope asks (its id, its protocol's shape).
    pub(super) fn refuse_malformed_as(
        mut self,
        e: &L7Error,
        envelope: &Envelope,
    ) -> Response<ProxyBody> {
        self.verdict = Verdict::Malformed;
        self.rule = "l7.parse".into();
        self.reason = Some(e.message_for(envelope.protocol));
        if let Some(protocol) = envelope.protocol {
            self.protocol = protocol;
        }
        self.summary.jsonrpc_id = envelope.id.clone();
        let audit_id = self.audit_id;
        self.respond_now(super::refuse::malformed(e, envelope, audit_id))
    }

    /// Answers without forwarding and writes the record.
    pub(super) fn respond_now(mut self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        self.summary.http_status = resp.status().as_u16();
        self.summary.response_bytes = resp.body().size_hint().exact().unwrap_or(0);
        self.finish_now();
        resp
    }

    /// Writes the record of a call that got no response from its server.
    pub(super) fn finish_now(self) {
        self.finish_with(None);
    }

    /// The call ended with `status`: builds its [`Outcome`] and writes it.
    pub(super) fn finish(mut self, status: OutcomeStatus, is_error: bool, usage: Option<Usage>) {
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

/// The outcome's fields of a record.
pub(super) fn apply_status(s: &mut CallSummary, status: &OutcomeStatus, is_error: bool) {
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
