//! MCP list results (`tools/list`, `resources/list`, `prompts/list`) reach
//! the agent without the items it may not use (ARCHITECTURE.md 5.1): the
//! body layer that drives the pure rewrite in `l7::list_filter`, with the
//! policy snapshot the call was decided with.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    http::response,
    Response, StatusCode,
};

use super::{
    exchange::Exchange,
    inspect::{FrameResult, Inspection, Layer},
    refuse,
};
use crate::{
    config::MAX_SSE_EVENT_BYTES,
    l7::{
        jsonrpc::{self, Message},
        list_filter::{self, FilterError, ListRewrite},
        sse::{replace_event_data, SseEvent, SseEventSplitter, SseParser},
        Call, Direction, OutcomeStatus, Protocol,
    },
    policy::{DecisionPoint as _, ListKind, PolicySet},
    proxy::pool::{BoxError, ProxyBody},
    records::Verdict,
};

/// A list call whose result is filtered: the policy snapshot it was decided
/// with and the call, to ask which items stay.
pub(super) struct ListScope {
    pub kind: ListKind,
    pub policy: Arc<PolicySet>,
    pub call: Call,
}

/// The list a response's result is filtered as: an MCP list call's
/// successful response. Not yet: 2024-11-05 list results, which arrive on
/// the session's GET stream (`pending`); their items are still refused per
/// call.
pub(super) fn list_to_filter(
    call: &Call,
    resp: &response::Parts,
    pending: bool,
) -> Option<ListKind> {
    ListKind::of_method(&call.method).filter(|_| {
        call.protocol == Protocol::Mcp
            && call.direction == Direction::ClientToServer
            && resp.status.is_success()
            && !pending
    })
}

impl Exchange {
    /// Filters `message` if it is the result of this exchange's list call
    /// (ARCHITECTURE.md 5.1): the server's tool annotations are observed
    /// first, then each item stays exactly when the policy says it is
    /// visible. Counts what was removed in the record.
    fn filter_list(&mut self, message: &[u8]) -> Result<ListRewrite, FilterError> {
        let Some(scope) = self.list.as_deref() else {
            return Ok(ListRewrite::NotTheResult);
        };
        let ctx = self.call_context(&scope.call);
        let policy = &scope.policy;
        let rewrite = list_filter::filter_list_message(
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
        let message = refuse::unfiltered_error(id.as_ref(), code, &reason, self.audit_id);
        self.verdict = Verdict::Malformed;
        self.rule = refuse::RULE_LIST_FILTER.to_owned();
        self.forced_outcome = Some(OutcomeStatus::Error {
            code,
            message: format!("mesh could not filter the list result: {reason}"),
        });
        self.reason = Some(reason);
        message
    }
}

/// A list call answered with one JSON body: read whole (up to `limit`),
/// filtered, and sent with its new length. Fails closed: a body over the
/// limit or one that cannot be read as a list result is not forwarded; the
/// agent gets a JSON-RPC error with its call's id (HTTP 200, like a policy
/// refusal: `-32600` over the limit, `-32700` unreadable) and the record
/// says `malformed`, rule `mcp.list_filter`.
pub(super) async fn filter_json_list(
    mut ex: Exchange,
    mut rparts: response::Parts,
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
pub(super) struct SseListRewriter {
    splitter: SseEventSplitter,
    parser: SseParser,
    /// The response was seen: the rest passes straight through.
    done: bool,
    /// Held bytes were flushed at the stream's end.
    flushed: bool,
}

impl SseListRewriter {
    pub(super) fn new() -> SseListRewriter {
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
                out.extend_from_slice(&replace_event_data(event, &error));
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
                    out.extend_from_slice(&replace_event_data(event, &message));
                    *done = true;
                }
                Err(e) => {
                    let error = ex.list_unfiltered(-32700, format!("{}: {e}", ex.summary.method));
                    out.extend_from_slice(&replace_event_data(event, &error));
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

/// The list filter layer: for a list call answered on an event stream, the
/// event carrying its result is rewritten; without a rewriter, frames pass.
pub(super) struct ListFilter<B> {
    inner: B,
    rewriter: Option<Box<SseListRewriter>>,
}

impl<B: Layer> ListFilter<B> {
    pub(super) fn new(mut inner: B, rewriter: Option<Box<SseListRewriter>>) -> ListFilter<B> {
        if rewriter.is_some() {
            // Held bytes may still go out when upstream ends: the record
            // is written after them.
            inner.inspection().conclude_at_end = false;
        }
        ListFilter { inner, rewriter }
    }
}

impl<B: Layer> Layer for ListFilter<B> {
    fn inspection(&mut self) -> &mut Inspection {
        self.inner.inspection()
    }
}

impl<B: Layer> Body for ListFilter<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = &mut *self;
        let Some(rewriter) = this.rewriter.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        loop {
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let ex = this.inner.inspection().exchange.as_mut();
                        let out = rewriter.rewrite(data, ex);
                        if out.is_empty() {
                            continue; // an event still held
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    // Trailers: nothing of the stream's bytes.
                    continue;
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    if let Some(rest) = rewriter.flush() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    this.inner.inspection().conclude(true);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rewriter.as_ref().is_none_or(|r| r.flushed) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.rewriter.is_some() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}
