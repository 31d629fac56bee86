//! Budgets on the HTTP path (ARCHITECTURE.md 5.3): the call's maximum cost
//! is reserved before it is forwarded (`budget::charge`), a call budget is
//! settled once the server answers, and a budgeted LLM response passes
//! through the budget gate layer, which settles it from its usage and lets
//! its end go out only once that settlement is durable.
use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Body, Frame, SizeHint},
    header::{self, HeaderMap, HeaderValue},
    http::response,
};
use tracing::warn;

use super::{
    exchange::Exchange,
    headers,
    inspect::{FrameResult, Inspection, Inspector, Layer},
    HttpConn,
};
use crate::{
    budget::{
        charge::{self, BudgetRefusal, Charge},
        Commit, Spend,
    },
    config::MAX_SSE_EVENT_BYTES,
    l7::{
        llm::{self, LlmApi, Usage},
        sse::SseEventSplitter,
        Call,
    },
    policy::PolicySet,
    proxy::pool::{BoxError, ProxyBody},
    records::{BudgetSummary, SpendSummary},
};

impl HttpConn {
    /// Reserves the call's maximum cost against its budgets. Returns the
    /// body to forward instead, for an LLM request given an output bound.
    pub(super) fn reserve(
        &self,
        ex: &mut Exchange,
        policy: &PolicySet,
        call: &Call,
        body: &[u8],
        headers: &mut HeaderMap,
    ) -> Result<Option<ProxyBody>, BudgetRefusal> {
        let Some(scope) = policy.budget_scope(&ex.call_context(call)) else {
            return Ok(None);
        };
        let reserved = charge::reserve(&self.proxy.ledger, &self.agent, &scope, call, body)?;
        ex.summary.budget = Some(budget_summary(&reserved.charge));
        if matches!(reserved.charge, Charge::Llm(_)) {
            // Usage must be readable: no compressed response.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        let upstream_body = reserved.rewritten_body.map(|body| {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed()
        });
        ex.charge = Some(reserved.charge);
        Ok(upstream_body)
    }
}

/// A call budget is spent once the server answers; the agent sees the
/// answer only once that is durable.
pub(super) async fn settle_call(ex: &mut Exchange) {
    if matches!(ex.charge, Some(Charge::Call(_))) {
        let spend = Spend {
            calls: 1,
            ..Spend::default()
        };
        if let Some(commit) = ex.settle(Some(spend), false) {
            if let Err(e) = commit.await {
                warn!(agent = %ex.conn.agent, error = %e, "budget settlement not persisted");
            }
        }
    }
}

/// The gate a response passes through: a successful response to a
/// budgeted LLM call. An event stream loses its length (events are
/// forwarded whole; a cut adds its own end).
pub(super) fn for_response(ex: &Exchange, rparts: &mut response::Parts) -> Option<Box<GateState>> {
    match &ex.charge {
        Some(Charge::Llm(llm)) if rparts.status.is_success() => {
            let sse = headers::is_event_stream(headers::content_type(&rparts.headers));
            if sse {
                rparts.headers.remove(header::CONTENT_LENGTH);
            }
            let injected = sse && llm.usage_injected;
            Some(Box::new(GateState::new(
                sse,
                llm.api,
                llm.output_bound,
                injected,
            )))
        }
        _ => None,
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

impl Exchange {
    /// Settles the call's charge at `spend` (None: releases it) and notes it
    /// in the record. Returns the commit to await before the agent sees the
    /// end of its response; None when there was nothing to settle.
    pub(super) fn settle(&mut self, spend: Option<Spend>, cut: bool) -> Option<Commit> {
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

    /// Settles an LLM charge from the call's usage. A successful response
    /// whose usage could not be read (compressed, not the API's shape, over
    /// the inspection limit) is settled at its full reservation: what the
    /// mesh cannot count is counted at its bound, never at zero.
    pub(super) fn settle_llm(&mut self, usage: Option<&Usage>, cut: bool) -> Option<Commit> {
        let spend = match (&self.charge, usage) {
            (Some(Charge::Llm(llm)), Some(u)) => charge::llm_spend(llm, u),
            (Some(Charge::Llm(llm)), None) => {
                let why = "usage unreadable: settled at its full reservation";
                self.reason = Some(match self.reason.take() {
                    Some(r) => format!("{r}; {why}"),
                    None => why.to_owned(),
                });
                llm.reservation.reserved()
            }
            _ => return None,
        };
        self.settle(Some(spend), cut)
    }
}

/// A budgeted LLM response on its way to the agent. Event streams go out
/// whole event by event, so one can end cleanly at the reservation's output
/// bound; the response's end (its final event, or the last bytes of a JSON
/// body, held until then) goes out only once the call's settlement is
/// durable.
pub(super) struct GateState {
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
    /// The mesh asked for the stream's usage: its usage-only chunk is read,
    /// not forwarded.
    drop_usage_chunk: bool,
}

impl GateState {
    fn new(sse: bool, api: LlmApi, output_bound: u64, drop_usage_chunk: bool) -> GateState {
        GateState {
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
            drop_usage_chunk,
        }
    }

    /// Data from upstream.
    fn data(&mut self, insp: &mut Inspection, data: Bytes) {
        let Some(splitter) = self.events.as_mut() else {
            insp.inspect(&data);
            let over = matches!(&insp.inspector, Inspector::Llm(l) if l.over);
            match self.held.as_mut() {
                Some(held) if !over => held.push(data),
                Some(held) => {
                    let held = std::mem::take(held);
                    self.out.extend(held);
                    self.out.push_back(data);
                    self.held = None;
                }
                None => self.out.push_back(data),
            }
            return;
        };
        let mut events = Vec::new();
        splitter.push(&data, |event| events.push(Bytes::copy_from_slice(event)));
        let held = splitter.held();
        for event in events {
            self.event(insp, event);
        }
        if held > MAX_SSE_EVENT_BYTES && !self.done {
            // An event the gate cannot hold whole: the stream ends here,
            // charged at its full reservation (its usage is unreadable).
            if let Some(ex) = insp.exchange.as_mut() {
                ex.reason = Some(format!(
                    "stream ended by mesh: an event grew past {MAX_SSE_EVENT_BYTES} bytes"
                ));
                if !self.settled {
                    self.commit = ex.settle_llm(None, true);
                }
            }
            if let Some(splitter) = self.events.as_mut() {
                splitter.finish();
            }
            self.settled = true;
            self.done = true;
            if !self.terminator.is_empty() {
                self.out.push_back(Bytes::from_static(self.terminator));
            }
        }
    }

    /// One whole SSE event: forwarded, or the stream is cut before it.
    fn event(&mut self, insp: &mut Inspection, event: Bytes) {
        if self.done {
            return; // cut: nothing more goes out
        }
        if self.drop_usage_chunk && is_usage_chunk(&event) {
            insp.inspect(&event);
            insp.bytes = insp.bytes.saturating_sub(event.len() as u64);
            self.settle_if_ended(insp);
            return;
        }
        if self.settled {
            insp.inspect(&event);
            self.out.push_back(event);
            return;
        }
        let before = insp.tracker().cloned();
        insp.inspect(&event);
        let Some(tracker) = insp.tracker() else {
            self.out.push_back(event);
            return;
        };
        if tracker.output_so_far() > self.output_bound {
            // This event would take the output past what was reserved: the
            // stream ends before it, cleanly.
            let usage = before.clone().and_then(|t| t.finish(false));
            if let (Inspector::Llm(llm), Some(before)) = (&mut insp.inspector, before) {
                llm.tracker = before;
            }
            insp.bytes =
                insp.bytes.saturating_sub(event.len() as u64) + self.terminator.len() as u64;
            if let Some(ex) = insp.exchange.as_mut() {
                ex.reason = Some(format!(
                    "stream ended by mesh at its budget reservation of {} output tokens",
                    self.output_bound
                ));
                self.commit = ex.settle_llm(usage.as_ref(), true);
            }
            self.settled = true;
            self.done = true;
            if !self.terminator.is_empty() {
                self.out.push_back(Bytes::from_static(self.terminator));
            }
            return;
        }
        self.settle_if_ended(insp);
        self.out.push_back(event);
    }

    /// Settles once the stream said it ended (its usage is then known).
    fn settle_if_ended(&mut self, insp: &mut Inspection) {
        if self.settled {
            return;
        }
        let Some(tracker) = insp.tracker() else {
            return;
        };
        if tracker.saw_end() {
            let usage = tracker.clone().finish(true);
            if let Some(ex) = insp.exchange.as_mut() {
                self.commit = ex.settle_llm(usage.as_ref(), false);
            }
            self.settled = true;
        }
    }

    /// Upstream ended: settle from everything seen, release what was held.
    fn end(&mut self, insp: &mut Inspection) {
        self.done = true;
        if let Some(splitter) = self.events.as_mut() {
            let rest = splitter.finish();
            if !rest.is_empty() && !self.settled {
                insp.inspect(&rest);
                self.out.push_back(Bytes::from(rest));
            }
        }
        if !self.settled {
            let mut usage = None;
            if let Inspector::Llm(llm) = &mut insp.inspector {
                if llm.sse.is_none() && !llm.over && !llm.buf.is_empty() {
                    let body = std::mem::take(&mut llm.buf);
                    llm.tracker.feed_json(&body);
                }
                let ended = llm.sse.is_none() || llm.tracker.saw_end();
                usage = llm.tracker.clone().finish(ended);
            }
            if let Some(ex) = insp.exchange.as_mut() {
                self.commit = ex.settle_llm(usage.as_ref(), false);
            }
            self.settled = true;
        }
        if let Some(held) = self.held.take() {
            self.out.extend(held);
        }
    }
}

/// Whether a whole SSE event is a chat completion's usage-only chunk.
fn is_usage_chunk(event: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(event) else {
        return false;
    };
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    llm::is_usage_only_chunk(&data)
}

/// The budget gate layer. With a gate it feeds the inspector itself, event
/// by event, and ends the exchange; without one, frames pass.
pub(super) struct BudgetGate<B> {
    inner: B,
    gate: Option<Box<GateState>>,
}

impl<B: Layer> BudgetGate<B> {
    pub(super) fn new(mut inner: B, gate: Option<Box<GateState>>) -> BudgetGate<B> {
        if gate.is_some() {
            let inspection = inner.inspection();
            inspection.feed_frames = false;
            inspection.conclude_at_end = false;
        }
        BudgetGate { inner, gate }
    }
}

impl<B: Layer> Layer for BudgetGate<B> {
    fn inspection(&mut self) -> &mut Inspection {
        self.inner.inspection()
    }
}

impl<B: Layer> Body for BudgetGate<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = &mut *self;
        let Some(gate) = this.gate.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        loop {
            if let Some(commit) = gate.commit.as_mut() {
                match Pin::new(commit).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        if let Err(e) = result {
                            warn!(error = %e, "budget settlement not persisted");
                        }
                        gate.commit = None;
                    }
                }
            }
            if let Some(data) = gate.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if gate.done {
                this.inner.inspection().conclude(true);
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing of the body: dropped.
                    if let Ok(data) = frame.into_data() {
                        gate.data(this.inner.inspection(), data);
                    }
                }
                // The inspector wrote the record of the broken response.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => gate.end(this.inner.inspection()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.gate {
            Some(gate) => gate.done && gate.out.is_empty() && gate.commit.is_none(),
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.gate.as_ref().is_some_and(|g| g.events.is_some()) {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}
