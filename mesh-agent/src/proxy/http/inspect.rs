//! The response inspector, the innermost layer of a response body: every
//! frame passes through unchanged while the inspector reads the call's
//! outcome from it (a JSON-RPC result or error, LLM usage), and the call's
//! record is written when the response ends (or is dropped early: the
//! stream was cut).
//!
//! The layers above it (list filter, budget gate, inject) share its
//! [`Inspection`]: the one exchange being written and what has been read.
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    http::response,
};
use tracing::debug;

use super::{
    exchange::Exchange,
    headers,
    sessions::{self, Pending, PendingKey, Sessions},
};
use crate::{
    config::MAX_SSE_EVENT_BYTES,
    l7::{
        jsonrpc::{self, Message},
        llm::UsageTracker,
        mcp::{self, McpGeneration},
        sse::{SseEvent, SseParser},
        Call, Direction, OutcomeStatus, Protocol, RpcId,
    },
    proxy::pool::BoxError,
};

pub(super) type FrameResult = Result<Frame<Bytes>, BoxError>;

/// Reads outcomes from a response as it streams by.
pub(super) enum Inspector {
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

pub(super) struct RpcStream {
    parser: SseParser,
    /// The id of the call this stream answers (absent for the GET streams).
    call_id: Option<RpcId>,
    outcome: Option<(OutcomeStatus, bool)>,
    session: Option<Arc<str>>,
    generation: Option<McpGeneration>,
}

pub(super) struct LlmInspect {
    pub tracker: UsageTracker,
    pub sse: Option<SseParser>,
    pub buf: Vec<u8>,
    limit: usize,
    pub over: bool,
}

impl Inspector {
    pub(super) fn for_response(call: &Call, resp: &response::Parts, limit: usize) -> Inspector {
        let content_type = headers::content_type(&resp.headers);
        let sse = headers::is_event_stream(content_type);
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
                if sse && sessions::is_legacy(call) && call.id.is_none() {
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

/// What the layers of one response share: the exchange whose record the
/// response completes, and what the inspector has read so far.
pub(super) struct Inspection {
    pub inspector: Inspector,
    /// Taken when the record is written.
    pub exchange: Option<Exchange>,
    /// Bytes of the response the agent was sent.
    pub bytes: u64,
    /// The last bytes inspected ended an SSE event.
    pub at_boundary: bool,
    /// A 2024-11-05 session whose `endpoint` event was just read, for the
    /// inject layer to open to refusals.
    pub endpoint: Option<Arc<str>>,
    /// Each data frame is inspected as it passes. Off when a layer above
    /// feeds the inspector itself (the budget gate: event by event).
    pub feed_frames: bool,
    /// The record is written when upstream ends. Off when a layer above
    /// still holds bytes then (the list filter, the budget gate): it writes
    /// the record when it ends.
    pub conclude_at_end: bool,
}

impl Inspection {
    /// Where this exchange's session state lives: the shared sessions, the
    /// agent and the destination (while its record is not written).
    pub(super) fn scope(&self) -> Option<(Arc<Sessions>, Arc<str>, SocketAddr)> {
        self.exchange.as_ref().map(|e| {
            (
                e.conn.proxy.sessions.clone(),
                e.conn.agent.clone(),
                e.conn.dst().0,
            )
        })
    }

    /// The usage tracker of an LLM response.
    pub fn tracker(&self) -> Option<&UsageTracker> {
        match &self.inspector {
            Inspector::Llm(llm) => Some(&llm.tracker),
            _ => None,
        }
    }

    pub fn inspect(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.at_boundary =
            data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n") || data.ends_with(b"\r\r");
        let scope = self.scope();
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
                            } else if let (Some((sessions, agent, dst)), Some(session), Some(id)) =
                                (&scope, session.as_ref(), id.as_ref())
                            {
                                // 2024-11-05: the response to a POSTed call.
                                sessions.complete(
                                    &PendingKey {
                                        agent: agent.clone(),
                                        dst: *dst,
                                        session: Some(session.clone()),
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
                            if let (Some((sessions, agent, dst)), Some(id)) =
                                (&scope, call.id.clone())
                            {
                                sessions.insert_pending(
                                    PendingKey {
                                        agent: agent.clone(),
                                        dst: *dst,
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
                    self.endpoint = Some(s);
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
    pub fn conclude(&mut self, complete: bool) {
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

/// A layer of a response body: reaches the one [`Inspection`] at the bottom
/// of the stack.
pub(super) trait Layer: Body<Data = Bytes, Error = BoxError> + Unpin {
    fn inspection(&mut self) -> &mut Inspection;
}

/// The bottom layer: the upstream response under its inspector.
pub(super) struct Inspect {
    inner: Incoming,
    state: Inspection,
}

impl Inspect {
    pub(super) fn new(
        inner: Incoming,
        inspector: Inspector,
        exchange: Option<Exchange>,
    ) -> Inspect {
        Inspect {
            inner,
            state: Inspection {
                inspector,
                exchange,
                bytes: 0,
                at_boundary: true,
                endpoint: None,
                feed_frames: true,
                conclude_at_end: true,
            },
        }
    }
}

impl Layer for Inspect {
    fn inspection(&mut self) -> &mut Inspection {
        &mut self.state
    }
}

impl Drop for Inspect {
    fn drop(&mut self) {
        // Dropped before its end: the agent went away or the stream broke.
        self.state.conclude(false);
    }
}

impl Body for Inspect {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.state.feed_frames {
                    if let Some(data) = frame.data_ref() {
                        this.state.inspect(data);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.conclude(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if this.state.conclude_at_end {
                    this.state.conclude(true);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
