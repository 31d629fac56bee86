//! Refusals as each protocol expects them (ARCHITECTURE.md section 6): a
//! JSON-RPC error in the framing the client asked for, or an HTTP error in
//! the provider's shape. Agents and their SDKs then fail the one call, with
//! the rule in the message, instead of seeing a broken connection.
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{header, HeaderMap, Response, StatusCode};
use serde_json::json;

use super::pool::ProxyBody;
use crate::l7::{llm::LlmApi, L7Error, RpcId};

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
/// forwarded, answered with the error's status and JSON-RPC code.
pub fn malformed(error: &L7Error, audit_id: u64) -> Response<ProxyBody> {
    let message = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": error.jsonrpc_code(),
            "message": error.to_string(),
            "data": { "audit_id": audit_id },
        },
    });
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
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
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response<ProxyBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_jsonrpc_refusal_names_the_rule_with_the_callers_id() {
        let resp = jsonrpc_refusal(Some(&RpcId::Number(3)), "r1", "because", 9, Framing::Json);
        assert_eq!(resp.status(), StatusCode::OK);
        let v = body_json(resp).await;
        assert_eq!(v["id"], 3);
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(v["error"]["data"]["rule"], "r1");
        assert_eq!(v["error"]["data"]["audit_id"], 9);
    }

    #[tokio::test]
    async fn sse_framing_is_one_message_event() {
        let resp = jsonrpc_refusal(Some(&RpcId::String("a".into())), "r", "x", 1, Framing::Sse);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let data = text
            .strip_prefix("event: message\ndata: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["id"], "a");
    }

    #[test]
    fn framing_follows_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json, text/event-stream".parse().unwrap(),
        );
        assert_eq!(Framing::for_request(&h, false), Framing::Json);
        assert_eq!(Framing::for_request(&h, true), Framing::Sse);
        h.insert(header::ACCEPT, "text/event-stream".parse().unwrap());
        assert_eq!(Framing::for_request(&h, false), Framing::Sse);
        assert_eq!(Framing::for_request(&HeaderMap::new(), true), Framing::Json);
    }

    #[tokio::test]
    async fn llm_refusals_take_the_providers_shape() {
        let v = body_json(llm_refusal(
            LlmApi::Messages,
            StatusCode::FORBIDDEN,
            "r",
            "x",
            1,
        ))
        .await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "permission_error");
        let resp = llm_refusal(
            LlmApi::ChatCompletions,
            StatusCode::TOO_MANY_REQUESTS,
            "r",
            "x",
            1,
        );
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "mesh_budget");
        assert_eq!(v["error"]["type"], "insufficient_quota");
    }

    #[tokio::test]
    async fn malformed_takes_the_errors_status_and_code() {
        let resp = malformed(&L7Error::TooLarge { limit: 4 }, 2);
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], -32600);
        assert!(v["id"].is_null());
    }
}
