//! Calls read from messages the proxy observes rather than decides on from
//! headers: requests on response streams, requests embedded in a 2026
//! `input_required` result, and the 2024 `endpoint` event.
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    call_name_member,
    head::query_session,
    params::{string_member, Params},
    McpDetails, McpGeneration,
};
use crate::{
    jsonrpc::{first_byte, from_raw, Message},
    Arguments, Call, Direction, L7Error, Protocol,
};

/// A request or notification seen on a response stream (or anywhere the
/// proxy has only the message) as a [`Call`]: server→client
/// `elicitation/create`, `sampling/createMessage`, `roots/list` on a 2025
/// SSE stream (direction [`Direction::ServerToClient`], ids in the server's
/// own id space), or 2024 messages on the `GET /sse` stream. `None` for
/// responses.
///
/// Lenient, since the message is observed rather than decided from headers:
/// members of the wrong type are left out. For server→client requests,
/// `arguments` is the whole `params` (the elicitation message and schema,
/// the sampling messages), which is what policy and audit look at.
/// `version` is left `None`: the caller knows it from the stream's request.
pub fn call_from_message(
    msg: &Message<'_>,
    direction: Direction,
    session: Option<&str>,
    generation: McpGeneration,
) -> Option<Call> {
    let (id, method, raw_params) = match msg {
        Message::Request { id, method, params } => (Some(id.clone()), method, *params),
        Message::Notification { method, params } => (None, method, *params),
        Message::Response { .. } => return None,
    };
    let mut call = message_call(method, raw_params, direction, generation);
    call.id = id;
    call.session = session.map(str::to_owned);
    Some(call)
}

fn message_call(
    method: &str,
    raw_params: Option<&RawValue>,
    direction: Direction,
    generation: McpGeneration,
) -> Call {
    let params = Params::parse(raw_params).unwrap_or_default();
    let name = call_name_member(method)
        .and_then(|key| string_member("name", params.member(key)).ok().flatten())
        .map(Cow::into_owned);
    let arguments = match direction {
        Direction::ServerToClient => {
            raw_params.and_then(|p| Arguments::from_raw("params", p).ok().flatten())
        }
        Direction::ClientToServer => match method {
            "tools/call" | "prompts/get" => params
                .arguments
                .and_then(|p| Arguments::from_raw("arguments", p).ok().flatten()),
            _ => None,
        },
    };
    let mut details = McpDetails::new(generation, None);
    details.input_responses = params.input_responses.is_some() || params.request_state.is_some();
    Call {
        protocol: Protocol::Mcp,
        direction,
        method: method.to_owned(),
        name,
        arguments,
        id: None,
        session: None,
        version: None,
        mcp: Some(details),
        a2a: None,
        llm: None,
    }
}

/// The server→client requests embedded in a 2026 `input_required` result
/// (`result.inputRequests`: key → `{method, params}`), as
/// [`Direction::ServerToClient`] calls with no id and the key in
/// [`McpDetails::input_key`], in key order. They are what 2025 servers sent
/// as separate requests; policy sees them the same way. Entries without a
/// string `method` are skipped.
pub fn input_requests(result: &RawValue, generation: McpGeneration) -> Result<Vec<Call>, L7Error> {
    #[derive(Deserialize)]
    struct InputRequired<'a> {
        #[serde(rename = "inputRequests", default, borrow)]
        input_requests: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct InputRequest<'a> {
        #[serde(default, borrow)]
        method: Option<&'a RawValue>,
        #[serde(default, borrow)]
        params: Option<&'a RawValue>,
    }
    if first_byte(result.get()) != Some(b'{') {
        return Ok(Vec::new());
    }
    let outer: InputRequired<'_> = from_raw("result", result)?;
    let Some(requests) = outer
        .input_requests
        .filter(|r| first_byte(r.get()) == Some(b'{'))
    else {
        return Ok(Vec::new());
    };
    let map: std::collections::BTreeMap<String, &RawValue> =
        from_raw("result.inputRequests", requests)?;
    let mut calls = Vec::with_capacity(map.len());
    for (key, raw) in map {
        let Ok(req) = from_raw::<InputRequest<'_>>("inputRequests entry", raw) else {
            continue;
        };
        let Some(Some(method)) = req
            .method
            .map(|m| string_member("method", Some(m)).ok().flatten())
        else {
            continue;
        };
        let mut call = message_call(&method, req.params, Direction::ServerToClient, generation);
        if let Some(d) = call.mcp.as_mut() {
            d.input_key = Some(key);
        }
        calls.push(call);
    }
    Ok(calls)
}

/// The session id in a 2024-11-05 `event: endpoint` data line
/// (`/messages/?session_id=…`, possibly an absolute URL).
pub fn endpoint_session(data: &str) -> Option<String> {
    let data = data.trim();
    let query = data.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query_session(query).map(str::to_owned)
}
