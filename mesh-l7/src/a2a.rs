//! A2A (agent to agent) JSON-RPC, v1.0 and v0.3.
//!
//! v1.0 names its methods after the gRPC service (`SendMessage`, `GetTask`,
//! …) and clients send `A2A-Version: 1.0`; v0.3 uses `message/send`,
//! `tasks/get`, …, usually without the header (an absent header means 0.3 to
//! a v1.0 server). Agents are discovered with `GET
//! /.well-known/agent-card.json` (before 0.3.0: `/.well-known/agent.json`),
//! which the mesh reports as the synthetic method [`AGENT_CARD_METHOD`].
use http::{request::Parts, Method};
use serde::Serialize;
use serde_json::Value;

use super::{
    jsonrpc::{to_value, Message},
    Arguments, Call, Direction, L7Error, Protocol,
};

/// Version header (lowercase, as `http` stores it).
pub const VERSION_HEADER: &str = "a2a-version";
/// Synthetic method of an agent card `GET`: not an A2A method; lets policy
/// and audit see discovery.
pub const AGENT_CARD_METHOD: &str = "agent/card";
/// Agent card path (v0.3.0 and later).
pub const AGENT_CARD_PATH: &str = "/.well-known/agent-card.json";
/// Agent card path before v0.3.0.
pub const LEGACY_AGENT_CARD_PATH: &str = "/.well-known/agent.json";
/// The version a request without `A2A-Version` (and without a v1.0 method
/// name to say otherwise) is taken to speak.
pub const DEFAULT_VERSION: &str = "0.3";

/// A2A specifics of a [`super::Call`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct A2aDetails {
    /// `1.0` or `0.3` (or what `A2A-Version` says).
    pub version: String,
    /// The response is an SSE stream: `SendStreamingMessage`,
    /// `message/stream`, `SubscribeToTask`, `tasks/resubscribe`.
    pub streaming: bool,
    /// `params.message.messageId` of a message send.
    pub message_id: Option<String>,
    /// The task the request is about: `params.id` of task methods,
    /// `params.taskId` of push-notification configs, `message.taskId` of a
    /// send that continues a task.
    pub task_id: Option<String>,
    /// `message.contextId` of a send, `params.contextId` of `ListTasks`.
    pub context_id: Option<String>,
}

/// What a method does, for reading its params.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send { streaming: bool },
    Task { streaming: bool },
    ListTasks,
    PushConfig,
    ExtendedCard,
}

/// Known methods: (name, version of that naming style, kind).
const METHODS: &[(&str, &str, Kind)] = &[
    ("SendMessage", "1.0", Kind::Send { streaming: false }),
    (
        "SendStreamingMessage",
        "1.0",
        Kind::Send { streaming: true },
    ),
    ("GetTask", "1.0", Kind::Task { streaming: false }),
    ("CancelTask", "1.0", Kind::Task { streaming: false }),
    ("SubscribeToTask", "1.0", Kind::Task { streaming: true }),
    ("ListTasks", "1.0", Kind::ListTasks),
    ("CreateTaskPushNotificationConfig", "1.0", Kind::PushConfig),
    ("GetTaskPushNotificationConfig", "1.0", Kind::PushConfig),
    ("ListTaskPushNotificationConfig", "1.0", Kind::PushConfig),
    ("ListTaskPushNotificationConfigs", "1.0", Kind::PushConfig),
    ("DeleteTaskPushNotificationConfig", "1.0", Kind::PushConfig),
    ("GetExtendedAgentCard", "1.0", Kind::ExtendedCard),
    ("message/send", "0.3", Kind::Send { streaming: false }),
    ("message/stream", "0.3", Kind::Send { streaming: true }),
    ("tasks/get", "0.3", Kind::Task { streaming: false }),
    ("tasks/cancel", "0.3", Kind::Task { streaming: false }),
    ("tasks/resubscribe", "0.3", Kind::Task { streaming: true }),
    ("tasks/pushNotificationConfig/set", "0.3", Kind::PushConfig),
    ("tasks/pushNotificationConfig/get", "0.3", Kind::PushConfig),
    ("tasks/pushNotificationConfig/list", "0.3", Kind::PushConfig),
    (
        "tasks/pushNotificationConfig/delete",
        "0.3",
        Kind::PushConfig,
    ),
    (
        "agent/getAuthenticatedExtendedCard",
        "0.3",
        Kind::ExtendedCard,
    ),
];

fn lookup(method: &str) -> Option<(&'static str, Kind)> {
    METHODS
        .iter()
        .find(|(m, _, _)| *m == method)
        .map(|(_, v, k)| (*v, *k))
}

/// Whether `method` is an A2A method (either naming style).
pub fn is_method(method: &str) -> bool {
    lookup(method).is_some()
}

/// `tasks/get` and `tasks/cancel` are also MCP methods (2025-11-25 tasks):
/// only the headers tell them apart.
pub fn is_shared_with_mcp(method: &str) -> bool {
    matches!(method, "tasks/get" | "tasks/cancel")
}

/// `A2A-Version`, when sent once and non-empty.
pub fn version_header(head: &Parts) -> Option<&str> {
    let mut all = head.headers.get_all(VERSION_HEADER).iter();
    let v = all.next()?.to_str().ok()?.trim();
    (all.next().is_none() && !v.is_empty()).then_some(v)
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The [`Call`] of an A2A JSON-RPC request or notification.
///
/// `arguments` is the whole `params` (bounded by the body limit); `name` is
/// the task id for task and push-config methods, `None` for message sends;
/// `session` is the context id. Error: [`L7Error::Parse`] for params nested
/// past the recursion limit.
pub fn request_call(version_header: Option<&str>, msg: &Message<'_>) -> Result<Call, L7Error> {
    let (id, method, raw_params) = match msg {
        Message::Request { id, method, params } => (Some(id.clone()), method, *params),
        Message::Notification { method, params } => (None, method, *params),
        Message::Response { .. } => {
            return Err(L7Error::InvalidRequest("a response is not a call".into()))
        }
    };
    let method: &str = method;
    let (params, arguments) = match raw_params {
        Some(raw) => (
            to_value("params", raw)?,
            Arguments::from_raw("params", raw)?,
        ),
        None => (None, None),
    };
    let known = lookup(method);
    let version = version_header
        .or(known.map(|(v, _)| v))
        .unwrap_or(DEFAULT_VERSION)
        .to_owned();
    let p = params.as_ref().unwrap_or(&Value::Null);
    let owned = |s: Option<&str>| s.map(str::to_owned);
    let mut details = A2aDetails {
        version: version.clone(),
        streaming: false,
        message_id: None,
        task_id: None,
        context_id: None,
    };
    let mut name = None;
    match known.map(|(_, k)| k) {
        Some(Kind::Send { streaming }) => {
            details.streaming = streaming;
            details.message_id = owned(str_at(p, &["message", "messageId"]));
            details.task_id = owned(str_at(p, &["message", "taskId"]));
            details.context_id = owned(str_at(p, &["message", "contextId"]));
        }
        Some(Kind::Task { streaming }) => {
            details.streaming = streaming;
            details.task_id = owned(str_at(p, &["id"]));
            name = details.task_id.clone();
        }
        Some(Kind::ListTasks) => {
            details.context_id = owned(str_at(p, &["contextId"]));
        }
        Some(Kind::PushConfig) => {
            // v1.0 and the v0.3 `set`: `taskId`; the other v0.3 methods
            // name the task `id`.
            details.task_id = owned(str_at(p, &["taskId"]).or_else(|| {
                method
                    .starts_with("tasks/pushNotificationConfig/")
                    .then(|| str_at(p, &["id"]))
                    .flatten()
            }));
            name = details.task_id.clone();
        }
        Some(Kind::ExtendedCard) | None => {}
    }
    Ok(Call {
        protocol: Protocol::A2a,
        direction: Direction::ClientToServer,
        method: method.to_owned(),
        name,
        arguments,
        id,
        session: details.context_id.clone(),
        version: Some(version),
        mcp: None,
        a2a: Some(details),
        llm: None,
    })
}

/// The [`Call`] of an agent card `GET` (either path, under any prefix), as
/// the synthetic method [`AGENT_CARD_METHOD`].
pub fn agent_card_call(head: &Parts) -> Option<Call> {
    if head.method != Method::GET {
        return None;
    }
    let path = head.uri.path();
    if !(path.ends_with(AGENT_CARD_PATH) || path.ends_with(LEGACY_AGENT_CARD_PATH)) {
        return None;
    }
    let version = version_header(head).unwrap_or(DEFAULT_VERSION).to_owned();
    Some(Call {
        protocol: Protocol::A2a,
        direction: Direction::ClientToServer,
        method: AGENT_CARD_METHOD.to_owned(),
        name: None,
        arguments: None,
        id: None,
        session: None,
        version: Some(version.clone()),
        mcp: None,
        a2a: Some(A2aDetails {
            version,
            streaming: false,
            message_id: None,
            task_id: None,
            context_id: None,
        }),
        llm: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{jsonrpc::parse_message, RpcId};
    use serde_json::json;

    fn call(version: Option<&str>, body: &str) -> Call {
        request_call(version, &parse_message(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn v1_send_message() {
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":"a1","method":"SendMessage","params":{"message":{"messageId":"m-1","contextId":"ctx-9","role":"ROLE_USER","parts":[{"text":"hi"}]}}}"#,
        );
        assert_eq!(c.protocol, Protocol::A2a);
        assert_eq!(c.method, "SendMessage");
        assert_eq!(c.name, None);
        assert_eq!(c.id, Some(RpcId::String("a1".into())));
        assert_eq!(c.session.as_deref(), Some("ctx-9"));
        assert_eq!(
            c.arguments.as_ref().unwrap().to_value()["message"]["parts"][0]["text"],
            "hi"
        );
        let d = c.a2a.unwrap();
        assert_eq!(d.version, "1.0");
        assert!(!d.streaming);
        assert_eq!(d.message_id.as_deref(), Some("m-1"));
        assert_eq!(d.context_id.as_deref(), Some("ctx-9"));
    }

    #[test]
    fn v03_message_send_and_stream() {
        let c = call(
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","kind":"message","messageId":"m-2","taskId":"t-1","parts":[{"kind":"text","text":"hi"}]}}}"#,
        );
        let d = c.a2a.unwrap();
        assert_eq!(d.version, "0.3");
        assert_eq!(d.task_id.as_deref(), Some("t-1"));
        assert_eq!(c.name, None);
        assert_eq!(c.session, None);
        let c = call(
            None,
            r#"{"jsonrpc":"2.0","id":2,"method":"message/stream","params":{"message":{"messageId":"m"}}}"#,
        );
        assert!(c.a2a.unwrap().streaming);
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":2,"method":"SendStreamingMessage","params":{"message":{"messageId":"m"}}}"#,
        );
        assert!(c.a2a.unwrap().streaming);
    }

    #[test]
    fn task_methods() {
        let c = call(
            None,
            r#"{"jsonrpc":"2.0","id":3,"method":"tasks/get","params":{"id":"t-7","historyLength":5}}"#,
        );
        assert_eq!(c.name.as_deref(), Some("t-7"));
        assert_eq!(c.a2a.as_ref().unwrap().task_id.as_deref(), Some("t-7"));
        assert_eq!(
            c.arguments.map(|a| a.to_value()),
            Some(json!({"id":"t-7","historyLength":5}))
        );
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":4,"method":"SubscribeToTask","params":{"id":"t-8"}}"#,
        );
        assert_eq!(c.name.as_deref(), Some("t-8"));
        assert!(c.a2a.unwrap().streaming);
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":5,"method":"GetTaskPushNotificationConfig","params":{"taskId":"t-9","id":"cfg"}}"#,
        );
        assert_eq!(c.name.as_deref(), Some("t-9"));
        let c = call(
            None,
            r#"{"jsonrpc":"2.0","id":6,"method":"tasks/pushNotificationConfig/get","params":{"id":"t-10"}}"#,
        );
        assert_eq!(c.name.as_deref(), Some("t-10"));
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":7,"method":"ListTasks","params":{"contextId":"ctx"}}"#,
        );
        assert_eq!((c.name, c.session.as_deref()), (None, Some("ctx")));
        let c = call(
            Some("1.0"),
            r#"{"jsonrpc":"2.0","id":8,"method":"GetExtendedAgentCard"}"#,
        );
        assert_eq!((c.name, c.arguments), (None, None));
    }

    #[test]
    fn methods() {
        assert!(is_method("SendMessage") && is_method("tasks/resubscribe"));
        assert!(!is_method("tools/call"));
        assert!(is_shared_with_mcp("tasks/get") && !is_shared_with_mcp("GetTask"));
    }

    #[test]
    fn agent_card() {
        let head = |path: &str| http::Request::get(path).body(()).unwrap().into_parts().0;
        let c = agent_card_call(&head("/.well-known/agent-card.json")).unwrap();
        assert_eq!(
            (c.protocol, c.method.as_str()),
            (Protocol::A2a, AGENT_CARD_METHOD)
        );
        assert!(agent_card_call(&head("/a2a/.well-known/agent.json")).is_some());
        assert!(agent_card_call(&head("/.well-known/openid-configuration")).is_none());
        let post = http::Request::post("/.well-known/agent-card.json")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(agent_card_call(&post).is_none());
    }
}
