//! Removes from MCP list results (`tools/list`, `resources/list`,
//! `prompts/list`) the items the agent may not use (ARCHITECTURE.md 5.1 and
//! 6): a pure rewrite of one JSON-RPC message. Which items stay is the
//! caller's to say (a predicate over each item's name), so this crate needs
//! no policy; the proxy drives it from a response body.
//!
//! What is kept is kept as the server wrote it: the envelope's and the
//! result's members (`nextCursor`, `_meta`, ...) and every kept item are
//! copied as their raw JSON text, in their order; only the whitespace
//! between members changes and the removed items go.
//!
//! Fail closed: a list result that cannot be read (invalid JSON, an item
//! that is not an object, a list member that is not an array) is an error,
//! and the proxy answers the call with a JSON-RPC error instead of passing
//! an unfiltered list. Items without a name (`uri` for resources) cannot be
//! judged and are removed.
use std::{borrow::Cow, fmt};

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::value::RawValue;

use crate::RpcId;

/// What a list response lists (MCP `tools/list`, `resources/list`,
/// `prompts/list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Resources,
    Prompts,
}

impl ListKind {
    /// The list method whose result this is.
    pub fn of_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "resources/list" => Some(ListKind::Resources),
            "prompts/list" => Some(ListKind::Prompts),
            _ => None,
        }
    }

    /// The method that uses a listed item (`tools/call`, ...).
    pub fn use_method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/call",
            ListKind::Resources => "resources/read",
            ListKind::Prompts => "prompts/get",
        }
    }
}

/// What a server says of one of its tools in `tools/list`
/// (`annotations.readOnlyHint`, `annotations.destructiveHint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAnnotations {
    pub name: String,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
}

/// Why a list result could not be filtered (the call is then answered with a
/// JSON-RPC error, never with the unfiltered list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("list result is not valid JSON: {0}")]
    Parse(String),
    #[error("list result has an unexpected shape: {0}")]
    Shape(String),
}

/// What [`filter_list_message`] did to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListRewrite {
    /// Not the list call's result (a request, a notification, an error, a
    /// response to another id): left alone.
    NotTheResult,
    /// The list call's result, every item kept: the bytes are unchanged.
    Unchanged,
    /// The list call's result with `hidden` items removed.
    Filtered { message: Vec<u8>, hidden: u32 },
}

/// The member of `result` that holds the items, and the item member that
/// names one.
fn members(kind: ListKind) -> (&'static str, &'static str) {
    match kind {
        ListKind::Tools => ("tools", "name"),
        ListKind::Resources => ("resources", "uri"),
        ListKind::Prompts => ("prompts", "name"),
    }
}

/// An object's members in order, values as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The parts of a listed item a decision reads; everything else is skipped.
#[derive(Deserialize)]
struct ItemHead<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(default)]
    annotations: Option<AnnotationsHead>,
}

#[derive(Deserialize)]
struct AnnotationsHead {
    #[serde(rename = "readOnlyHint", default)]
    read_only: Option<bool>,
    #[serde(rename = "destructiveHint", default)]
    destructive: Option<bool>,
}

fn parse<'a, T: Deserialize<'a>>(what: &str, text: &'a str) -> Result<T, FilterError> {
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => FilterError::Shape(format!("{what}: {e}")),
        _ => FilterError::Parse(format!("{what}: {e}")),
    })
}

/// Filters `message` (one JSON-RPC message) when it is the result of the
/// list call `call_id` of `kind`: `observe` is told every tool's annotations
/// first (tools only), then each item stays exactly when `visible(name)`.
pub fn filter_list_message(
    message: &[u8],
    kind: ListKind,
    call_id: Option<&RpcId>,
    observe: impl FnOnce(&[ToolAnnotations]),
    mut visible: impl FnMut(&str) -> bool,
) -> Result<ListRewrite, FilterError> {
    let text = std::str::from_utf8(message)
        .map_err(|e| FilterError::Parse(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let envelope: Members<'_> = parse("message", text)?;
    let member = |name: &str| envelope.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    if member("method").is_some() || member("error").is_some() {
        return Ok(ListRewrite::NotTheResult);
    }
    let Some(result) = member("result") else {
        return Ok(ListRewrite::NotTheResult);
    };
    let id: Option<RpcId> = match member("id") {
        Some(raw) => parse("id", raw.get()).unwrap_or(None),
        None => None,
    };
    if call_id.is_some() && id.as_ref() != call_id {
        return Ok(ListRewrite::NotTheResult);
    }
    let result_members: Members<'_> = parse("result", result.get())?;
    let (list_member, name_member) = members(kind);

    // Every occurrence of the list member is filtered (a client may take
    // either copy of a duplicated member).
    let mut lists: Vec<Vec<(&RawValue, ItemHead<'_>)>> = Vec::new();
    for (key, raw) in &result_members.0 {
        if key != list_member {
            continue;
        }
        let items: Vec<&RawValue> = parse(list_member, raw.get())?;
        let mut heads = Vec::with_capacity(items.len());
        for item in items {
            let head: ItemHead<'_> = parse(name_member, item.get())?;
            heads.push((item, head));
        }
        lists.push(heads);
    }
    if lists.is_empty() {
        return Err(FilterError::Shape(format!(
            "no `{list_member}` in the {} result",
            list_method(kind)
        )));
    }
    let name_of = |head: &ItemHead<'_>| -> Option<String> {
        match kind {
            ListKind::Resources => head.uri.as_deref().map(str::to_owned),
            ListKind::Tools | ListKind::Prompts => head.name.as_deref().map(str::to_owned),
        }
    };
    if kind == ListKind::Tools {
        let tools: Vec<ToolAnnotations> = lists
            .iter()
            .flatten()
            .filter_map(|(_, head)| {
                Some(ToolAnnotations {
                    name: name_of(head)?,
                    read_only: head.annotations.as_ref().and_then(|a| a.read_only),
                    destructive: head.annotations.as_ref().and_then(|a| a.destructive),
                })
            })
            .collect();
        observe(&tools);
    }

    let mut hidden = 0u32;
    let mut kept_lists: Vec<Vec<&RawValue>> = Vec::with_capacity(lists.len());
    for list in &lists {
        let mut kept = Vec::with_capacity(list.len());
        for (raw, head) in list {
            if name_of(head).is_some_and(|n| visible(&n)) {
                kept.push(*raw);
            } else {
                hidden += 1;
            }
        }
        kept_lists.push(kept);
    }
    if hidden == 0 {
        return Ok(ListRewrite::Unchanged);
    }

    let mut new_result = String::with_capacity(result.get().len());
    new_result.push('{');
    let mut next_list = kept_lists.iter();
    for (i, (key, raw)) in result_members.0.iter().enumerate() {
        if i > 0 {
            new_result.push(',');
        }
        push_key(&mut new_result, key);
        if key == list_member {
            new_result.push('[');
            for (j, item) in next_list.next().into_iter().flatten().enumerate() {
                if j > 0 {
                    new_result.push(',');
                }
                new_result.push_str(item.get());
            }
            new_result.push(']');
        } else {
            new_result.push_str(raw.get());
        }
    }
    new_result.push('}');

    let mut out = String::with_capacity(text.len());
    out.push('{');
    for (i, (key, raw)) in envelope.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_key(&mut out, key);
        if key == "result" {
            out.push_str(&new_result);
        } else {
            out.push_str(raw.get());
        }
    }
    out.push('}');
    Ok(ListRewrite::Filtered {
        message: out.into_bytes(),
        hidden,
    })
}

fn list_method(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Tools => "tools/list",
        ListKind::Resources => "resources/list",
        ListKind::Prompts => "prompts/list",
    }
}

fn push_key(out: &mut String, key: &str) {
    // A string always serializes.
    out.push_str(&serde_json::Value::from(key).to_string());
    out.push(':');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn run(
        message: &str,
        kind: ListKind,
        id: Option<RpcId>,
        allowed: &[&str],
    ) -> (Result<ListRewrite, FilterError>, Vec<ToolAnnotations>) {
        let mut seen = Vec::new();
        let r = filter_list_message(
            message.as_bytes(),
            kind,
            id.as_ref(),
            |t| seen = t.to_vec(),
            |n| allowed.contains(&n),
        );
        (r, seen)
    }

    fn filtered(r: Result<ListRewrite, FilterError>) -> (Value, u32) {
        match r {
            Ok(ListRewrite::Filtered { message, hidden }) => {
                (serde_json::from_slice(&message).unwrap(), hidden)
            }
            other => panic!("not filtered: {other:?}"),
        }
    }

    #[test]
    fn tools_the_agent_may_not_call_are_removed_and_the_rest_kept_as_is() {
        let msg = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[
            {"name":"add","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}},
            {"name":"delete_all","annotations":{"destructiveHint":true}},
            {"name":"echo","description":"e \"quoted\"","x-extra":[1,2]}],
            "nextCursor":"c2","_meta":{"k":"v"}}}"#;
        let (r, seen) = run(
            msg,
            ListKind::Tools,
            Some(RpcId::Number(3)),
            &["add", "echo"],
        );
        let (v, hidden) = filtered(r);
        assert_eq!(hidden, 1);
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":3,"result":{"tools":[
                {"name":"add","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}},
                {"name":"echo","description":"e \"quoted\"","x-extra":[1,2]}],
                "nextCursor":"c2","_meta":{"k":"v"}}})
        );
        assert_eq!(
            seen,
            vec![
                ToolAnnotations {
                    name: "add".into(),
                    read_only: Some(true),
                    destructive: None
                },
                ToolAnnotations {
                    name: "delete_all".into(),
                    read_only: None,
                    destructive: Some(true)
                },
                ToolAnnotations {
                    name: "echo".into(),
                    read_only: None,
                    destructive: None
                },
            ]
        );
    }

    #[test]
    fn member_order_and_item_text_are_preserved() {
        let msg = r#"{"result":{"_meta":{},"tools":[{"name":"b", "z":1,"a":2},{"name":"a"}],"nextCursor":null},"id":"x","jsonrpc":"2.0"}"#;
        let (r, _) = run(
            msg,
            ListKind::Tools,
            Some(RpcId::String("x".into())),
            &["b"],
        );
        match r {
            Ok(ListRewrite::Filtered { message, hidden }) => {
                assert_eq!(hidden, 1);
                assert_eq!(
                    std::str::from_utf8(&message).unwrap(),
                    r#"{"result":{"_meta":{},"tools":[{"name":"b", "z":1,"a":2}],"nextCursor":null},"id":"x","jsonrpc":"2.0"}"#
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_visible_is_unchanged() {
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#;
        let (r, _) = run(msg, ListKind::Tools, Some(RpcId::Number(1)), &["a"]);
        assert_eq!(r, Ok(ListRewrite::Unchanged));
    }

    #[test]
    fn resources_by_uri_and_prompts_by_name() {
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[
            {"uri":"ticket://1","name":"one"},{"uri":"secret://x","name":"ticket://1"}]}}"#;
        let (v, hidden) = filtered(run(msg, ListKind::Resources, None, &["ticket://1"]).0);
        assert_eq!(hidden, 1);
        assert_eq!(
            v["result"]["resources"],
            json!([{"uri":"ticket://1","name":"one"}])
        );

        let msg =
            r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"greet"},{"name":"leak"}]}}"#;
        let (v, _) = filtered(run(msg, ListKind::Prompts, None, &["greet"]).0);
        assert_eq!(v["result"]["prompts"], json!([{"name":"greet"}]));
    }

    #[test]
    fn items_without_a_name_are_removed() {
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"x"},{"name":"a"}]}}"#;
        let (v, hidden) = filtered(run(msg, ListKind::Tools, None, &["a"]).0);
        assert_eq!(hidden, 1);
        assert_eq!(v["result"]["tools"], json!([{"name":"a"}]));
    }

    #[test]
    fn every_copy_of_a_duplicated_list_member_is_filtered() {
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"tools":[{"name":"b"},{"name":"a"}]}}"#;
        match run(msg, ListKind::Tools, None, &["a"]).0 {
            Ok(ListRewrite::Filtered { message, hidden }) => {
                assert_eq!(hidden, 1);
                assert_eq!(
                    std::str::from_utf8(&message).unwrap(),
                    r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"tools":[{"name":"a"}]}}"#
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_messages_are_left_alone() {
        for msg in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"elicitation/create","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"x"}]}}"#,
        ] {
            let (r, _) = run(msg, ListKind::Tools, Some(RpcId::Number(1)), &[]);
            assert_eq!(r, Ok(ListRewrite::NotTheResult), "{msg}");
        }
    }

    #[test]
    fn unreadable_results_fail_closed() {
        for msg in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["x"]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":3}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"cursor":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
            "\u{0}",
        ] {
            let (r, _) = run(msg, ListKind::Tools, Some(RpcId::Number(1)), &["x", "a"]);
            assert!(r.is_err(), "{msg}: {r:?}");
        }
        assert!(matches!(
            filter_list_message(b"\xff", ListKind::Tools, None, |_| {}, |_| true),
            Err(FilterError::Parse(_))
        ));
    }
}
