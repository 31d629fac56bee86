//! One JSON-RPC 2.0 message from bytes.
//!
//! The body is read once, with borrowed deserialization: the envelope's
//! members are located and `params`/`result` are kept as raw JSON text
//! ([`RawValue`]), so a 4 MiB tool result is skipped over, never turned into a
//! `Value` tree. Callers parse the parts they need (`params.name`,
//! `params.arguments`) from the raw text afterwards.
//!
//! Stricter than most servers on purpose: a duplicated envelope member
//! (`"method"` twice), a `jsonrpc` other than `"2.0"` or a batch is refused,
//! because the mesh must decide on exactly what the server will execute, and
//! servers disagree on which copy of a duplicated member wins.
use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::{
    de::{self, IgnoredAny, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{error::Category, value::RawValue};

use super::{L7Error, OutcomeStatus, RpcId};

/// The only `jsonrpc` member value accepted.
pub const VERSION: &str = "2.0";

/// One JSON-RPC message, borrowing from the body it was parsed from.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    /// A request: has a `method` and a non-null `id`.
    Request {
        id: RpcId,
        method: Cow<'a, str>,
        /// Raw `params` (an object or an array), if present.
        params: Option<&'a RawValue>,
    },
    /// A notification: a `method` and no `id`; no response is expected.
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A response: a `result` or an `error`.
    Response {
        /// `None` for `"id": null` (an error about an unparseable request)
        /// or a response without an id.
        id: Option<RpcId>,
        status: OutcomeStatus,
        /// MCP `result.isError == true`: the tool failed, the call did not.
        is_error: bool,
    },
}

impl<'a> Message<'a> {
    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&RpcId> {
        match self {
            Message::Request { id, .. } => Some(id),
            Message::Response { id, .. } => id.as_ref(),
            Message::Notification { .. } => None,
        }
    }

    /// The raw params of a request or notification.
    pub fn params(&self) -> Option<&'a RawValue> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => *params,
            Message::Response { .. } => None,
        }
    }
}

/// Parses one JSON-RPC 2.0 message.
///
/// - invalid UTF-8, invalid or truncated JSON, nesting beyond serde_json's
///   recursion limit: [`L7Error::Parse`] (saying where);
/// - a JSON array: [`L7Error::Batch`] (MCP removed batches in 2025-06-18;
///   the SDK refuses them);
/// - anything else that is not one request, notification or response:
///   [`L7Error::InvalidRequest`].
pub fn parse_message(body: &[u8]) -> Result<Message<'_>, L7Error> {
    let text = std::str::from_utf8(body)
        .map_err(|e| L7Error::Parse(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    match first_byte(text) {
        Some(b'[') => {
            // Validate first: `[` followed by garbage is a parse error, not a
            // batch. `IgnoredAny` skips iteratively (no recursion).
            return match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err(L7Error::Batch),
                Err(e) => Err(json_error("body", &e)),
            };
        }
        Some(b'{') => {}
        None => return Err(L7Error::InvalidRequest("empty body".into())),
        Some(_) => {
            // Valid JSON that is not an object, or not JSON at all.
            return match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err(L7Error::InvalidRequest("not a JSON object".into())),
                Err(e) => Err(json_error("body", &e)),
            };
        }
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| json_error("body", &e))?;
    env.into_message()
}

/// The raw `result` of a response body, for callers that need more of it
/// than [`Message::Response`] says (MCP `tools/list` filtering, 2026
/// `inputRequests`). `None` when the body is not a JSON-RPC object with a
/// `result`. A second pass over the body, taken only on those paths.
pub fn result_raw(body: &[u8]) -> Option<&RawValue> {
    let text = std::str::from_utf8(body).ok()?;
    if first_byte(text) != Some(b'{') {
        return None;
    }
    serde_json::from_str::<Envelope<'_>>(text).ok()?.result
}

/// The first non-whitespace byte (JSON whitespace).
pub(crate) fn first_byte(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Maps a serde_json error to an [`L7Error`]: bad syntax (including the
/// recursion limit) is a parse error, well-formed JSON of the wrong shape an
/// invalid request. The message keeps serde_json's line and column.
pub(crate) fn json_error(what: &str, e: &serde_json::Error) -> L7Error {
    match e.classify() {
        Category::Data => L7Error::InvalidRequest(format!("{what}: {e}")),
        Category::Syntax | Category::Eof | Category::Io => L7Error::Parse(format!("{what}: {e}")),
    }
}

/// Parses `T` from raw JSON text (params, a member), borrowing from it.
pub(crate) fn from_raw<'a, T: Deserialize<'a>>(
    what: &str,
    raw: &'a RawValue,
) -> Result<T, L7Error> {
    serde_json::from_str(raw.get()).map_err(|e| json_error(what, &e))
}

/// Parses a raw JSON value into a `serde_json::Value` (for `arguments`);
/// `null` is treated as absent.
pub(crate) fn to_value(what: &str, raw: &RawValue) -> Result<Option<serde_json::Value>, L7Error> {
    if raw.get() == "null" {
        return Ok(None);
    }
    serde_json::from_str(raw.get())
        .map(Some)
        .map_err(|e| json_error(what, &e))
}

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// Deserializes a member that is present (even when `null`) as `Some(raw)`;
/// with `#[serde(default)]` an absent member is `None`. Plain
/// `Option<&RawValue>` would turn `"result": null` into "absent".
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The envelope members. Unknown members are ignored; duplicated known
/// members are an error (serde's derive refuses them).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    fn into_message(self) -> Result<Message<'a>, L7Error> {
        match self.jsonrpc {
            Some(v) if v.get() == "\"2.0\"" => {}
            Some(v) => {
                return Err(L7Error::InvalidRequest(format!(
                    "jsonrpc must be \"2.0\", not {}",
                    truncate(v.get(), 32)
                )))
            }
            None => return Err(L7Error::InvalidRequest("missing jsonrpc member".into())),
        }
        match (self.method, self.result, self.error) {
            (Some(method), None, None) => {
                let method: Str<'a> = from_raw("method", method)?;
                if let Some(p) = self.params {
                    if !matches!(first_byte(p.get()), Some(b'{' | b'[')) {
                        return Err(L7Error::InvalidRequest(
                            "params must be an object or an array".into(),
                        ));
                    }
                }
                match self.id {
                    None => Ok(Message::Notification {
                        method: method.0,
                        params: self.params,
                    }),
                    Some(raw) => match parse_id(raw)? {
                        Some(id) => Ok(Message::Request {
                            id,
                            method: method.0,
                            params: self.params,
                        }),
                        None => Err(L7Error::InvalidRequest(
                            "request id must not be null".into(),
                        )),
                    },
                }
            }
            (None, Some(result), None) => {
                let id = self.id.map(parse_id).transpose()?.flatten();
                let (status, is_error) = peek_result(result);
                Ok(Message::Response {
                    id,
                    status,
                    is_error,
                })
            }
            (None, None, Some(error)) => {
                let id = self.id.map(parse_id).transpose()?.flatten();
                let obj: ErrorObject<'_> = from_raw("error", error)?;
                Ok(Message::Response {
                    id,
                    status: OutcomeStatus::Error {
                        code: obj.code,
                        message: obj.message.0.into_owned(),
                    },
                    is_error: false,
                })
            }
            (None, None, None) => Err(L7Error::InvalidRequest(
                "neither a method nor a result or error".into(),
            )),
            _ => Err(L7Error::InvalidRequest(
                "more than one of method, result and error".into(),
            )),
        }
    }
}

/// A JSON-RPC id: an integer or a string (MCP forbids `null` on requests;
/// fractional numbers are refused). `Ok(None)` for `null`.
fn parse_id(raw: &RawValue) -> Result<Option<RpcId>, L7Error> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => {
            let s: Str<'_> = from_raw("id", raw)?;
            Ok(Some(RpcId::String(s.0.into_owned())))
        }
        Some(b'-' | b'0'..=b'9') => {
            text.parse::<i64>()
                .map(|n| Some(RpcId::Number(n)))
                .map_err(|_| {
                    L7Error::InvalidRequest(format!(
                        "id must be an integer or a string, not {}",
                        truncate(text, 32)
                    ))
                })
        }
        _ => Err(L7Error::InvalidRequest(format!(
            "id must be an integer or a string, not {}",
            truncate(text, 32)
        ))),
    }
}

/// Reads `resultType` and `isError` of a result object without building it.
/// A result that is not an object, or whose members have other types, is a
/// plain result: the response side is observed, not refused.
fn peek_result(result: &RawValue) -> (OutcomeStatus, bool) {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "resultType", default, borrow)]
        result_type: Option<&'a RawValue>,
        #[serde(rename = "isError", default, borrow)]
        is_error: Option<&'a RawValue>,
    }
    if first_byte(result.get()) != Some(b'{') {
        return (OutcomeStatus::Result, false);
    }
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(result.get()) else {
        return (OutcomeStatus::Result, false);
    };
    let input_required = peek
        .result_type
        .and_then(|raw| serde_json::from_str::<Str<'_>>(raw.get()).ok())
        .is_some_and(|s| s.as_str() == "input_required");
    let is_error = peek.is_error.is_some_and(|raw| raw.get() == "true");
    let status = if input_required {
        OutcomeStatus::InputRequired
    } else {
        OutcomeStatus::Result
    };
    (status, is_error)
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    code: i64,
    #[serde(borrow)]
    message: Str<'a>,
}

/// At most `max` bytes of `s`, cut on a character boundary, for messages.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message<'_>, L7Error> {
        parse_message(s.as_bytes())
    }

    #[test]
    fn request_with_params_borrows() {
        let m = parse(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#)
            .unwrap();
        let Message::Request { id, method, params } = m else {
            panic!("not a request: {m:?}")
        };
        assert_eq!(id, RpcId::Number(3));
        assert!(matches!(method, Cow::Borrowed("tools/call")));
        assert_eq!(
            params.unwrap().get(),
            r#"{"name":"add","arguments":{"a":2,"b":3}}"#
        );
    }

    #[test]
    fn string_and_number_ids_differ() {
        let a = parse(r#"{"jsonrpc":"2.0","id":"1","method":"ping"}"#).unwrap();
        let b = parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(a.id(), Some(&RpcId::String("1".into())));
        assert_eq!(b.id(), Some(&RpcId::Number(1)));
        assert_ne!(a.id(), b.id());
        let neg = parse(r#"{"jsonrpc":"2.0","id":-7,"method":"ping"}"#).unwrap();
        assert_eq!(neg.id(), Some(&RpcId::Number(-7)));
    }

    #[test]
    fn escaped_method_is_owned_and_decoded() {
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#).unwrap();
        assert_eq!(m.method(), Some("tools/call"));
    }

    #[test]
    fn notification() {
        let m = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(
            matches!(m, Message::Notification { ref method, params: None } if method == "notifications/initialized")
        );
    }

    #[test]
    fn result_response() {
        let m = parse(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"text":"5","type":"text"}],"isError":false,"resultType":"complete"}}"#).unwrap();
        let Message::Response {
            id,
            status,
            is_error,
        } = m
        else {
            panic!()
        };
        assert_eq!(id, Some(RpcId::Number(3)));
        assert_eq!(status, OutcomeStatus::Result);
        assert!(!is_error);
    }

    #[test]
    fn tool_error_and_input_required() {
        let m =
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                is_error: true,
                status: OutcomeStatus::Result,
                ..
            }
        ));
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"k":{"method":"elicitation/create","params":{}}},"requestState":"x"}}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                status: OutcomeStatus::InputRequired,
                is_error: false,
                ..
            }
        ));
    }

    #[test]
    fn null_and_non_object_results_are_results() {
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                status: OutcomeStatus::Result,
                ..
            }
        ));
        let m =
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"yes","resultType":5}}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                status: OutcomeStatus::Result,
                is_error: false,
                ..
            }
        ));
    }

    #[test]
    fn error_response() {
        let m = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error","data":{"x":1}}}"#).unwrap();
        let Message::Response { id, status, .. } = m else {
            panic!()
        };
        assert_eq!(id, None);
        assert_eq!(
            status,
            OutcomeStatus::Error {
                code: -32700,
                message: "Parse error".into()
            }
        );
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#),
            Err(L7Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn truncated_json_says_where() {
        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#).unwrap_err();
        let L7Error::Parse(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("line 1 column"), "{msg}");
        assert_eq!(e.jsonrpc_code(), -32700);
    }

    #[test]
    fn batch_refused() {
        assert_eq!(
            parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err(),
            L7Error::Batch
        );
        assert!(matches!(parse("[1,"), Err(L7Error::Parse(_))));
    }

    #[test]
    fn invalid_utf8() {
        let e = parse_message(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}").unwrap_err();
        assert!(
            matches!(e, L7Error::Parse(ref m) if m.contains("UTF-8")),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_version_and_shapes() {
        for body in [
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":""}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
            r#""just a string""#,
            "42",
            "   ",
        ] {
            let e = parse(body).unwrap_err();
            assert!(matches!(e, L7Error::InvalidRequest(_)), "{body}: {e:?}");
        }
    }

    #[test]
    fn trailing_garbage_is_a_parse_error() {
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"ping"} x"#),
            Err(L7Error::Parse(_))
        ));
        assert!(matches!(parse("hello"), Err(L7Error::Parse(_))));
    }

    #[test]
    fn deep_nesting_never_overflows() {
        let depth = 200_000;
        // Ignored members are skipped iteratively.
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let m = parse(&body).unwrap();
        // Building a Value from them hits serde_json's recursion limit.
        let e = to_value("params", m.params().unwrap()).unwrap_err();
        assert!(
            matches!(e, L7Error::Parse(ref msg) if msg.contains("recursion")),
            "{e:?}"
        );
        // A deep array at the top is a well-formed batch, a deep unclosed one a parse error.
        assert_eq!(
            parse(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap_err(),
            L7Error::Batch
        );
        assert!(matches!(parse(&"[".repeat(depth)), Err(L7Error::Parse(_))));
        assert!(matches!(
            parse(&"{\"a\":".repeat(depth)),
            Err(L7Error::Parse(_))
        ));
    }
}
