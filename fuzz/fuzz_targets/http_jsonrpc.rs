//! The request entry point (`request::wants_body`, `request::classify`) and
//! `jsonrpc::parse_message` over fuzzed heads and bodies. Must never panic.
//!
//! Input: two header bytes, then newline-separated header values, then the
//! body.
//! - byte 0, bits 0-2: the method; bits 3-7: the path (both from small sets);
//! - byte 1: which headers are sent, one bit each (see `HEADERS`); bit 7
//!   sends `mcp-method` a second time;
//! - then one line per header sent, in `HEADERS` order, as its value (a value
//!   that is not a valid header value is sent as `x`);
//! - the rest is the body.
#![no_main]

use http::{request::Parts, HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use mesh_l7::{
    jsonrpc::{self, Message},
    request::{self, Classified},
};

const METHODS: [Method; 8] = [
    Method::POST,
    Method::GET,
    Method::DELETE,
    Method::PUT,
    Method::PATCH,
    Method::OPTIONS,
    Method::HEAD,
    Method::POST,
];

const PATHS: [&str; 16] = [
    "/mcp",
    "/messages/?session_id=abc",
    "/v1/chat/completions",
    "/.well-known/agent-card.json",
    "/mcp/",
    "/messages?sessionId=0f3c",
    "/v1/messages",
    "/.well-known/agent.json",
    "/",
    "/sse",
    "/v1/responses",
    "/a2a",
    "/messages/?session_id=",
    "/openai/v1/chat/completions?session_id=x",
    "http://127.0.0.1:8080/mcp?x=1",
    "/.well-known/agent-card.json?session_id=abc",
];

/// Headers selected by the bits of byte 1 (bit 7: a second `mcp-method`).
const HEADERS: [&str; 7] = [
    "content-type",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "a2a-version",
    "accept",
];

fn head(method: Method, path: &str, headers: &[(&'static str, &[u8])]) -> Parts {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .expect("every path in PATHS is a valid URI")
        .into_parts();
    for &(name, value) in headers {
        let value = HeaderValue::from_bytes(value).unwrap_or(HeaderValue::from_static("x"));
        parts.headers.append(HeaderName::from_static(name), value);
    }
    parts
}

fn check_message(body: &[u8]) {
    match jsonrpc::parse_message(body) {
        Ok(msg) => {
            match &msg {
                Message::Request { .. } => {
                    assert!(msg.method().is_some());
                    assert!(msg.id().is_some());
                }
                Message::Notification { .. } => {
                    assert!(msg.method().is_some());
                    assert!(msg.id().is_none());
                }
                Message::Response { .. } => {
                    assert!(msg.method().is_none());
                    assert!(msg.params().is_none());
                }
            }
            let _ = format!("{msg:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.http_status(), e.jsonrpc_code());
        }
    }
    let _ = jsonrpc::result_raw(body);
}

fuzz_target!(|input: &[u8]| {
    let [m, bits, rest @ ..] = input else {
        return;
    };
    let method = METHODS[usize::from(m & 7)].clone();
    let path = PATHS[usize::from(m >> 3) % PATHS.len()];

    let mut rest = rest;
    let mut next_line = || -> &[u8] {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = after;
        line
    };
    let mut headers: Vec<(&'static str, &[u8])> = Vec::new();
    for (i, &name) in HEADERS.iter().enumerate() {
        if bits & (1 << i) != 0 {
            headers.push((name, next_line()));
        }
    }
    if bits & 0x80 != 0 {
        headers.push(("mcp-method", next_line()));
    }
    let body = rest;

    let parts = head(method, path, &headers);
    let _ = request::wants_body(&parts);
    match request::classify(&parts, body) {
        Ok(Classified::Call(call)) => {
            let _ = serde_json::to_string(&call).expect("a Call serializes");
        }
        Ok(Classified::Reply { .. } | Classified::Plain) => {}
        Err(e) => {
            let _ = (e.to_string(), e.http_status(), e.jsonrpc_code());
        }
    }
    check_message(body);
});
