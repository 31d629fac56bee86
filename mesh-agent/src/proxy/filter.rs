//! The proxy's side of MCP list filtering.
use crate::l7::RpcId;
pub use crate::l7::{
    list_filter::{filter_list_message, FilterError, ListRewrite},
    sse::{replace_event_data, SseEventSplitter},
};

/// The JSON-RPC error a list call gets when its result could not be
/// filtered: the caller's id, `code` (-32600 too large, -32700 unreadable)
/// and the audit id, so one call fails instead of leaking the list.
pub fn unfiltered_error(
    call_id: Option<&RpcId>,
    code: i64,
    reason: &str,
    audit_id: u64,
) -> Vec<u8> {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": call_id,
        "error": {
            "code": code,
            "message": format!("mesh could not filter the list result: {reason}"),
            "data": { "rule": RULE_LIST_FILTER, "reason": reason, "audit_id": audit_id },
        },
    })
    .to_string()
    .into_bytes()
}

/// Rule named in records and errors when a list result could not be filtered.
pub const RULE_LIST_FILTER: &str = "mcp.list_filter";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_unfiltered_error_carries_the_callers_id() {
        let v: Value = serde_json::from_slice(&unfiltered_error(
            Some(&RpcId::Number(4)),
            -32600,
            "too big",
            9,
        ))
        .unwrap();
        assert_eq!(v["id"], 4);
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["data"]["rule"], RULE_LIST_FILTER);
        assert_eq!(v["error"]["data"]["audit_id"], 9);
    }
}
