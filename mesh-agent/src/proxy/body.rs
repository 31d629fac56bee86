//! Request bodies whose content decides policy are read whole, up to the
//! inspection limit; every other body streams through untouched.
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderMap},
    http::request::Parts,
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
    if !request::wants_body(parts) {
        return Ok((Bytes::new(), body.map_err(BoxError::from).boxed()));
    }
    let bytes = read_limited(body, &parts.headers, limit).await?;
    Ok((
        bytes.clone(),
        Full::new(bytes).map_err(|n| match n {}).boxed(),
    ))
}

/// Why a request body was not read.
pub enum ReadError {
    /// Over the limit, declared or seen.
    TooLarge,
    /// The client's side of the body failed.
    Client(BoxError),
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
