//! Request bodies whose content decides policy are read whole, up to the
//! inspection limit; every other body streams through untouched.
//!
//! What decides is the body, not what the headers claim: a body that starts
//! like JSON is read whole whatever its content type (a JSON-RPC call sent
//! as `text/plain` is still an MCP call), and a body in a content-encoding
//! the mesh would have to decode first is refused.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderMap},
    http::request::Parts,
    Method,
};

use crate::{
    l7::request,
    proxy::pool::{BoxError, ProxyBody},
};

/// The body when its content decides policy (read whole, up to `limit`;
/// empty otherwise), and the body to forward.
pub async fn read_body(
    parts: &Parts,
    body: Incoming,
    limit: usize,
) -> Result<(Bytes, ProxyBody), ReadError> {
    if !body.is_end_stream() {
        if let Some(coding) = content_coding(&parts.headers) {
            return Err(ReadError::Encoded(coding));
        }
    }
    if request::wants_body(parts) {
        let bytes = read_limited(body, &parts.headers, limit).await?;
        return Ok((bytes.clone(), full(bytes)));
    }
    if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok((Bytes::new(), body.map_err(BoxError::from).boxed()));
    }
    // Another content type: read until the first meaningful byte says
    // whether this is JSON after all.
    let mut body = body;
    let mut head = BytesMut::new();
    let json = loop {
        if let Some(json) = request::starts_like_json(&head) {
            break json;
        }
        match body.frame().await {
            None => break false,
            Some(Err(e)) => return Err(ReadError::Client(e.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => head.extend_from_slice(&data),
                // Trailers before any content: nothing to classify.
                Err(_) => break false,
            },
        }
        if head.len() > limit {
            // Only whitespace so far: what follows could still be JSON
            // that a server reads, so it is not passed unread.
            return Err(ReadError::TooLarge);
        }
    };
    if !json {
        let head = head.freeze();
        let forward = Prefixed {
            head: Some(head),
            rest: body,
        }
        .boxed();
        return Ok((Bytes::new(), forward));
    }
    let remaining = limit.saturating_sub(head.len());
    let rest = read_limited(body, &HeaderMap::new(), remaining).await?;
    head.extend_from_slice(&rest);
    let bytes = head.freeze();
    Ok((bytes.clone(), full(bytes)))
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|n| match n {}).boxed()
}

/// A `Content-Encoding` other than `identity`, as sent.
fn content_coding(headers: &HeaderMap) -> Option<String> {
    let mut codings = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
    codings
        .next()
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

/// The bytes read while classifying, then the rest of the body.
struct Prefixed {
    head: Option<Bytes>,
    rest: Incoming,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(head) = self.head.take().filter(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(|h| h.is_empty()) && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

/// Why a request body was not read.
pub enum ReadError {
    /// Over the limit, declared or seen.
    TooLarge,
    /// The client's side of the body failed.
    Client(BoxError),
    /// Sent in a content-encoding (named) the mesh does not read.
    Encoded(String),
}

/// Reads a request body up to `limit` bytes; a declared length over the limit
/// is refused before reading.
pub async fn read_limited(
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
