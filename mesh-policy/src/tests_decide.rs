//! How calls are decided (ARCHITECTURE.md 5.1): MCP tools, resources and
//! prompts, list visibility, annotations, conditions, LLM models, A2A,
//! undeclared servers, and explanations.

use super::*;
use mesh_l7::llm::{LlmApi, LlmRequest};
use mesh_l7::{a2a::AGENT_CARD_METHOD, Arguments, Call, Direction, Protocol};

const HEAD: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n";

/// The tickets policy of ARCHITECTURE.md section 5, plus a second server
/// that trusts annotations.
fn tickets() -> PolicySet {
    policy(&format!(
        "{HEAD}egress:\n  allow: [\"127.0.0.2:7001\", \"127.0.0.2:7002\", \"127.0.0.2:7003\", \"127.0.0.2:9000\", \
         \"127.0.0.2:9001\", \"api.openai.com:443\", \"127.0.0.9:8080\"]\n\
         mcp:\n\
         \x20 - server: tickets\n\
         \x20   address: \"127.0.0.2:7001/mcp\"\n\
         \x20   tools:\n\
         \x20     read: [\"get_*\", \"list_*\"]\n\
         \x20     write: [\"comment_ticket\", \"close_*\"]\n\
         \x20     execute: [\"run_*\"]\n\
         \x20     deny: [\"delete_*\", \"close_all\"]\n\
         \x20   grant: [read, write]\n\
         \x20   resources: {{ allow: [\"ticket://*\"] }}\n\
         \x20   prompts: {{ allow: [\"summarize\"] }}\n\
         \x20   when:\n\
         \x20     - 'tool != \"comment_ticket\" || size(args.body) < 20'\n\
         \x20 - server: notes\n\
         \x20   address: \"127.0.0.2:7002\"\n\
         \x20   trust_annotations: true\n\
         \x20   tools: {{ read: [\"search\"] }}\n\
         \x20   grant: [read]\n\
         \x20 - server: reader\n\
         \x20   address: \"127.0.0.2:7003\"\n\
         \x20   tools: {{ read: [\"get\"], write: [\"put\"] }}\n\
         \x20   grant: [read]\n\
         llm:\n\
         \x20 - {{ provider: openai, address: \"api.openai.com:443\", models: [\"gpt-4o-mini\", \"o?-mini\"] }}\n\
         a2a:\n\
         \x20 - {{ agent: billing, address: \"127.0.0.2:9000\" }}\n"
    ))
}

fn policy(text: &str) -> PolicySet {
    match PolicySet::from_files(&[("t.yaml".to_string(), text.to_string())]) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn args(json: &str) -> Option<Arguments> {
    let raw: Box<serde_json::value::RawValue> = match serde_json::from_str(json) {
        Ok(r) => r,
        Err(e) => panic!("{json}: {e}"),
    };
    match Arguments::from_raw("arguments", &raw) {
        Ok(a) => a,
        Err(e) => panic!("{json}: {e}"),
    }
}

fn call(protocol: Protocol, method: &str, name: Option<&str>, arguments: Option<&str>) -> Call {
    Call {
        protocol,
        direction: Direction::ClientToServer,
        method: method.into(),
        name: name.map(Into::into),
        arguments: arguments.and_then(args),
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: None,
    }
}

fn mcp_call(method: &str, name: Option<&str>, arguments: Option<&str>) -> Call {
    call(Protocol::Mcp, method, name, arguments)
}

fn llm_call(api: LlmApi, model: &str) -> Call {
    let mut c = call(Protocol::Llm, api.method(), Some(model), None);
    c.llm = Some(LlmRequest {
        api,
        model: model.into(),
        max_output_tokens: None,
        stream: false,
        include_usage: true,
        input_bytes: 10,
        background: false,
    });
    c
}

fn ctx<'a>(agent: &'a str, server: &str, path: &'a str, call: &'a Call) -> CallContext<'a> {
    CallContext {
        agent,
        cgroup_id: 1,
        pid: 2,
        uid: 3,
        server: addr(server),
        server_name: None,
        path,
        call,
    }
}

/// Decides `call` from agent `a` to the tickets server.
fn on_tickets(p: &PolicySet, call: &Call) -> Decision {
    p.decide(&ctx("a", "127.0.0.2:7001", "/mcp", call))
}

fn tool(p: &PolicySet, name: &str, arguments: Option<&str>) -> Decision {
    on_tickets(p, &mcp_call("tools/call", Some(name), arguments))
}

fn allowed(rule: &str) -> Decision {
    Decision::Allow { rule: rule.into() }
}

fn refused(rule: &str, reason: &str) -> Decision {
    Decision::Refuse {
        rule: rule.into(),
        reason: reason.into(),
    }
}

#[test]
fn decide_allowed_tool_names_its_grant() {
    let p = tickets();
    assert_eq!(
        tool(&p, "get_ticket", None),
        allowed("mcp[tickets].grant.read")
    );
    assert_eq!(
        tool(&p, "list_tickets", None),
        allowed("mcp[tickets].grant.read")
    );
    assert_eq!(
        tool(&p, "close_ticket", None),
        allowed("mcp[tickets].grant.write")
    );
    // Any path below the declared one is the same server.
    let c = mcp_call("tools/call", Some("get_ticket"), None);
    assert!(matches!(
        p.decide(&ctx("a", "127.0.0.2:7001", "/mcp/x?s=1", &c)),
        Decision::Allow { .. }
    ));
}

#[test]
fn decide_deny_globs_come_first() {
    let p = tickets();
    assert_eq!(
        tool(&p, "delete_ticket", None),
        refused(
            "mcp[tickets].tools.deny[0]",
            "tool \"delete_ticket\" is denied by mcp[tickets].tools.deny[0] \"delete_*\" (t.yaml)"
        )
    );
    // close_all is a write tool by close_*, but deny wins.
    assert_eq!(
        tool(&p, "close_all", None).rule(),
        "mcp[tickets].tools.deny[1]"
    );
}

#[test]
fn decide_unknown_tool_is_refused() {
    let p = tickets();
    assert_eq!(
        tool(&p, "reboot", None),
        refused(
            "mcp[tickets].tools.unknown",
            "unknown tool \"reboot\": no glob of mcp[tickets].tools classifies it (t.yaml)"
        )
    );
}

#[test]
fn decide_class_must_be_granted() {
    let p = tickets();
    assert_eq!(
        tool(&p, "run_report", None),
        refused(
            "mcp[tickets].grant",
            "tool \"run_report\" is execute (by mcp[tickets].tools.execute[0] \"run_*\") but \
             mcp[tickets].grant is [read, write] (t.yaml)"
        )
    );
    // reader is granted [read] only: its write tool is refused.
    let put = mcp_call("tools/call", Some("put"), None);
    let get = mcp_call("tools/call", Some("get"), None);
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7003", "/", &put)),
        refused(
            "mcp[reader].grant",
            "tool \"put\" is write (by mcp[reader].tools.write[0] \"put\") but mcp[reader].grant is [read] (t.yaml)"
        )
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7003", "/", &get)),
        allowed("mcp[reader].grant.read")
    );
}

fn annotation(name: &str, read_only: Option<bool>) -> ToolAnnotations {
    ToolAnnotations {
        name: name.into(),
        read_only,
        destructive: None,
    }
}

#[test]
fn decide_trusted_annotations_classify_tools() {
    let p = tickets();
    let list = mcp_call("tools/list", None, None);
    let notes = ctx("a", "127.0.0.2:7002", "/", &list);
    let lookup = mcp_call("tools/call", Some("lookup"), None);
    let remove = mcp_call("tools/call", Some("remove"), None);
    // Before the server listed its tools, they are unknown.
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7002", "/", &lookup)),
        refused(
            "mcp[notes].tools.unknown",
            "unknown tool \"lookup\": no glob of mcp[notes].tools classifies it, and the server's \
             tools/list annotations (as last seen) do not list it (t.yaml)"
        )
    );
    p.observe_tools(
        &notes,
        &[
            annotation("lookup", Some(true)),
            annotation("remove", Some(false)),
        ],
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7002", "/", &lookup)),
        allowed("mcp[notes].grant.read")
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7002", "/", &remove)),
        refused(
            "mcp[notes].grant",
            "tool \"remove\" is write (by the server's tools/list annotations) but mcp[notes].grant is [read] (t.yaml)"
        )
    );
    assert!(p.visible(&notes, ListKind::Tools, "lookup"));
    assert!(!p.visible(&notes, ListKind::Tools, "remove"));
    // A reloaded set keeps what the server said when it carries the store over ...
    let reloaded = tickets().with_annotations_from(&p);
    assert!(
        reloaded
            .decide(&ctx("a", "127.0.0.2:7002", "/", &lookup))
            .rule()
            == "mcp[notes].grant.read"
    );
    // ... and a fresh one does not.
    assert_eq!(
        tickets()
            .decide(&ctx("a", "127.0.0.2:7002", "/", &lookup))
            .rule(),
        "mcp[notes].tools.unknown"
    );
}

#[test]
fn decide_untrusted_annotations_are_ignored() {
    let p = tickets();
    let list = mcp_call("tools/list", None, None);
    let reader = ctx("a", "127.0.0.2:7003", "/", &list);
    p.observe_tools(&reader, &[annotation("peek", Some(true))]);
    let peek = mcp_call("tools/call", Some("peek"), None);
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7003", "/", &peek)).rule(),
        "mcp[reader].tools.unknown"
    );
    assert!(!p.visible(&reader, ListKind::Tools, "peek"));
    // Globs classify before annotations: a read-only hint does not make a write tool read.
    let notes = ctx("a", "127.0.0.2:7002", "/", &list);
    p.observe_tools(&notes, &[annotation("search", Some(false))]);
    let search = mcp_call("tools/call", Some("search"), None);
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7002", "/", &search)),
        allowed("mcp[notes].grant.read")
    );
}

#[test]
fn decide_conditions_read_arguments() {
    let p = tickets();
    assert_eq!(
        tool(&p, "comment_ticket", Some(r#"{"id": 7, "body": "thanks"}"#)),
        allowed("mcp[tickets].grant.write")
    );
    assert_eq!(
        tool(&p, "comment_ticket", Some(r#"{"id": 7, "body": "a very long comment indeed"}"#)),
        refused(
            "mcp[tickets].when[0]",
            "condition mcp[tickets].when[0] \"tool != \\\"comment_ticket\\\" || size(args.body) < 20\" does not \
             hold for tool \"comment_ticket\": it is false (t.yaml)"
        )
    );
    // No body: the condition cannot be evaluated, so it does not hold.
    let missing = tool(&p, "comment_ticket", None);
    assert_eq!(missing.rule(), "mcp[tickets].when[0]");
    assert!(
        matches!(&missing, Decision::Refuse { reason, .. } if reason.contains("it cannot be evaluated: ")),
        "{missing:?}"
    );
    // Other tools pass the same condition without arguments.
    assert_eq!(
        tool(&p, "get_ticket", None),
        allowed("mcp[tickets].grant.read")
    );
}

#[test]
fn decide_resources_and_prompts_allow_lists() {
    let p = tickets();
    let read = |uri: &str| on_tickets(&p, &mcp_call("resources/read", Some(uri), None));
    let get = |name: &str| on_tickets(&p, &mcp_call("prompts/get", Some(name), None));
    assert_eq!(read("ticket://42"), allowed("mcp[tickets].resources.allow"));
    assert_eq!(
        read("file:///etc/passwd"),
        refused(
            "mcp[tickets].resources.allow",
            "resource \"file:///etc/passwd\" is not allowed by mcp[tickets].resources.allow: no glob matches (t.yaml)"
        )
    );
    assert_eq!(get("summarize"), allowed("mcp[tickets].prompts.allow"));
    assert_eq!(get("summarize2").rule(), "mcp[tickets].prompts.allow");
    assert!(!get("summarize2").label().eq("allow"));
    // reader has no lists: nothing is allowed.
    let r = mcp_call("resources/read", Some("x://1"), None);
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7003", "/", &r)),
        refused(
            "mcp[reader].resources.allow",
            "resource \"x://1\" is not allowed by mcp[reader].resources.allow: the list is absent, which allows \
             nothing (t.yaml)"
        )
    );
    // Other methods are allowed once the server is declared.
    for method in [
        "initialize",
        "ping",
        "tools/list",
        "notifications/initialized",
    ] {
        assert_eq!(
            on_tickets(&p, &mcp_call(method, None, None)),
            allowed("mcp[tickets]"),
            "{method}"
        );
    }
}

#[test]
fn visible_hides_exactly_the_refused_items() {
    let p = tickets();
    let list = mcp_call("tools/list", None, None);
    let c = ctx("a", "127.0.0.2:7001", "/mcp", &list);
    let tools = [
        "get_ticket",
        "list_x",
        "comment_ticket",
        "close_ticket",
        "close_all",
        "delete_ticket",
        "run_report",
        "reboot",
    ];
    let shown: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| p.visible(&c, ListKind::Tools, t))
        .collect();
    // comment_ticket stays: its condition depends on the call's arguments.
    assert_eq!(
        shown,
        ["get_ticket", "list_x", "comment_ticket", "close_ticket"]
    );
    for t in tools {
        let decided = tool(&p, t, Some(r#"{"body": "ok"}"#));
        assert_eq!(
            p.visible(&c, ListKind::Tools, t),
            decided.label() == "allow",
            "{t}: {decided:?}"
        );
    }
    assert!(p.visible(&c, ListKind::Resources, "ticket://1"));
    assert!(!p.visible(&c, ListKind::Resources, "secret://1"));
    assert!(p.visible(&c, ListKind::Prompts, "summarize"));
    assert!(!p.visible(&c, ListKind::Prompts, "other"));
    // An undeclared server shows nothing; an agent without an mcp section everything.
    let elsewhere = ctx("a", "127.0.0.2:7009", "/", &list);
    assert!(!p.visible(&elsewhere, ListKind::Tools, "get_ticket"));
    let open = policy(&format!("{HEAD}egress: {{ default: allow }}\n"));
    assert!(open.visible(&elsewhere, ListKind::Tools, "anything"));
}

#[test]
fn decide_llm_models() {
    let p = tickets();
    let decide = |api: LlmApi, model: &str, server_name: Option<&str>| {
        let c = llm_call(api, model);
        let mut context = ctx("a", "127.0.0.9:443", "/v1/chat/completions", &c);
        context.server_name = server_name;
        p.decide(&context)
    };
    let openai = Some("api.openai.com");
    assert_eq!(
        decide(LlmApi::ChatCompletions, "gpt-4o-mini", openai),
        allowed("llm[openai].models")
    );
    assert_eq!(
        decide(LlmApi::Responses, "o3-mini", openai),
        allowed("llm[openai].models")
    );
    assert_eq!(
        decide(LlmApi::ChatCompletions, "gpt-4o", openai),
        refused(
            "llm[openai].models",
            "model \"gpt-4o\" is not in llm[openai].models [\"gpt-4o-mini\", \"o?-mini\"] (t.yaml)"
        )
    );
    // The Anthropic API at the OpenAI address is no declared endpoint.
    assert_eq!(
        decide(LlmApi::Messages, "claude", openai),
        refused(
            "llm.undeclared",
            "LLM endpoint 127.0.0.9:443/v1/chat/completions (server name \"api.openai.com\") (anthropic API) is \
             not declared in the llm section of agent a (t.yaml)"
        )
    );
    // Egress comes first: without the name, the address is not allowed.
    assert_eq!(
        decide(LlmApi::ChatCompletions, "gpt-4o-mini", None).rule(),
        "egress.default"
    );
    // Without an llm section, egress decides.
    let open = policy(&format!("{HEAD}egress: {{ default: allow }}\n"));
    let c = llm_call(LlmApi::Messages, "anything");
    assert_eq!(
        open.decide(&ctx("a", "127.0.0.9:443", "/v1/messages", &c)),
        allowed("egress.default")
    );
}

#[test]
fn decide_a2a_by_address() {
    let p = tickets();
    let send = call(
        Protocol::A2a,
        "SendMessage",
        None,
        Some(r#"{"message": {}}"#),
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:9000", "/", &send)),
        allowed("a2a[billing]")
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:9001", "/", &send)),
        refused(
            "a2a.undeclared",
            "A2A agent at 127.0.0.2:9001/ is not declared in the a2a section of agent a (t.yaml)"
        )
    );
    // The agent card stays readable wherever egress allows.
    let card = call(Protocol::A2a, AGENT_CARD_METHOD, None, None);
    assert_eq!(
        p.decide(&ctx(
            "a",
            "127.0.0.2:9001",
            "/.well-known/agent-card.json",
            &card
        )),
        allowed("egress.allow[4]")
    );
}

#[test]
fn decide_mcp_undeclared_with_and_without_an_mcp_section() {
    let p = tickets();
    let get = mcp_call("tools/call", Some("get_ticket"), None);
    // Same address, other path: not the declared server.
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:7001", "/other", &get)),
        refused(
            "mcp.undeclared",
            "MCP server at 127.0.0.2:7001/other is not declared in the mcp section of agent a (t.yaml)"
        )
    );
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.2:9001", "/mcp", &get)).rule(),
        "mcp.undeclared"
    );
    // Egress is decided first.
    assert_eq!(
        p.decide(&ctx("a", "127.0.0.3:7001", "/mcp", &get)).rule(),
        "egress.default"
    );
    // An empty mcp section declares no server at all.
    let none = policy(&format!("{HEAD}egress: {{ default: allow }}\nmcp: []\n"));
    assert_eq!(
        none.decide(&ctx("a", "127.0.0.2:7001", "/mcp", &get))
            .rule(),
        "mcp.undeclared"
    );
    // Without an mcp section, egress alone governs MCP.
    let egress_only = policy(&format!("{HEAD}egress:\n  allow: [\"127.0.0.2:7001\"]\n"));
    assert_eq!(
        egress_only.decide(&ctx("a", "127.0.0.2:7001", "/mcp", &get)),
        allowed("egress.allow[0]")
    );
    // No policy at all.
    assert_eq!(
        p.decide(&ctx("b", "127.0.0.2:7001", "/mcp", &get)).rule(),
        "no-policy"
    );
}

#[test]
fn decide_server_by_dns_name() {
    let p = policy(&format!(
        "{HEAD}egress: {{ allow: [\"tools.test:8443\"] }}\nmcp:\n  - {{ server: t, address: \"tools.test:8443\", \
         tools: {{ read: [\"*\"] }}, grant: [read] }}\n"
    ));
    let get = mcp_call("tools/call", Some("x"), None);
    let mut c = ctx("a", "127.0.0.2:8443", "/", &get);
    c.server_name = Some("Tools.Test");
    assert_eq!(p.decide(&c), allowed("mcp[t].grant.read"));
    c.server_name = Some("other.test");
    assert_eq!(p.decide(&c).rule(), "egress.default");
}

#[test]
fn explain_lists_the_steps() {
    let p = tickets();
    let query = |server: &str, tool: &str, args: Option<serde_json::Value>| {
        p.explain(&ExplainQuery {
            agent: "a".into(),
            server: server.into(),
            tool: tool.into(),
            args,
        })
    };
    let e = query(
        "tickets",
        "comment_ticket",
        Some(serde_json::json!({"body": "hi"})),
    );
    assert_eq!(e.decision, "allow");
    assert_eq!(e.rule, "mcp[tickets].grant.write");
    assert_eq!(e.reason, None);
    assert_eq!(
        e.steps,
        vec![
            "server \"tickets\" is mcp[tickets] at \"127.0.0.2:7001/mcp\"".to_string(),
            "egress: allowed by egress.allow[0]".into(),
            "mcp[tickets]: address \"127.0.0.2:7001/mcp\" matches".into(),
            "mcp[tickets].tools.write[0] \"comment_ticket\" classifies \"comment_ticket\" as write".into(),
            "mcp[tickets].grant.write: granted".into(),
            "mcp[tickets].when[0] \"tool != \\\"comment_ticket\\\" || size(args.body) < 20\": holds".into(),
        ]
    );
    let e = query("127.0.0.2:7001/mcp", "delete_x", None);
    assert_eq!(
        (e.decision.as_str(), e.rule.as_str()),
        ("refuse", "mcp[tickets].tools.deny[0]")
    );
    assert_eq!(
        e.steps.last().map(String::as_str),
        Some("mcp[tickets].tools.deny[0] \"delete_*\" matches: refused")
    );
    let e = query(
        "tickets",
        "comment_ticket",
        Some(serde_json::json!({"body": "x".repeat(30)})),
    );
    assert_eq!(e.rule, "mcp[tickets].when[0]");
    assert!(
        e.steps
            .last()
            .is_some_and(|s| s.ends_with("does not hold: it is false")),
        "{:?}",
        e.steps
    );
    let e = query("reader", "put", None);
    assert_eq!(e.rule, "mcp[reader].grant");
    assert_eq!(
        e.steps.last().map(String::as_str),
        Some("mcp[reader].grant [read] does not include write: refused")
    );
    let e = query("nowhere", "x", None);
    assert_eq!(
        (e.decision.as_str(), e.rule.as_str()),
        ("refuse", "explain.query")
    );
    let e = query("tickets", "x", Some(serde_json::json!([1])));
    assert_eq!(
        e.reason.as_deref(),
        Some("args must be a JSON object, not [1]")
    );
    let e = p.explain(&ExplainQuery {
        agent: "nobody".into(),
        server: "127.0.0.2:7001".into(),
        tool: "x".into(),
        args: None,
    });
    assert_eq!(e.rule, "no-policy");
}

#[test]
fn architecture_example_policy_loads_and_decides() {
    let doc = include_str!("../../docs/ARCHITECTURE.md");
    let section = doc.split("## 5. Policy").nth(1).unwrap_or_default();
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap_or_default();
    assert!(example.contains("kind: AgentPolicy"), "no example found");
    let p = policy(example);
    let comment = mcp_call(
        "tools/call",
        Some("comment_ticket"),
        Some(r#"{"body": "ok"}"#),
    );
    let agent = "support-bot";
    assert_eq!(
        p.decide(&ctx(agent, "127.0.0.2:7001", "/", &comment)),
        allowed("mcp[tickets].grant.write")
    );
    let delete = mcp_call("tools/call", Some("delete_ticket"), None);
    assert_eq!(
        p.decide(&ctx(agent, "127.0.0.2:7001", "/", &delete)).rule(),
        "mcp[tickets].tools.deny[0]"
    );
    assert_eq!(p.budgets(agent).len(), 3);
    assert_eq!(p.approvals(agent)[0].required, 2);
}

/// Which budgets a call counts against (ARCHITECTURE.md 5.3).
fn budgeted() -> PolicySet {
    policy(&format!(
        "{HEAD}egress:\n  allow: [\"127.0.0.2:*\"]\n\
         mcp:\n\
         \x20 - {{ server: tickets, address: \"127.0.0.2:7001\", tools: {{ read: [\"*\"] }}, grant: [read] }}\n\
         \x20 - {{ server: notes, address: \"127.0.0.2:7002\", tools: {{ read: [\"*\"] }}, grant: [read] }}\n\
         llm:\n\
         \x20 - {{ provider: openai, address: \"127.0.0.2:8000\", models: [\"*\"], max_output_tokens: 256 }}\n\
         a2a:\n\
         \x20 - {{ agent: billing, address: \"127.0.0.2:9000\" }}\n\
         prices:\n\
         \x20 gpt-4o-mini: {{ input: 0.15, output: 0.6 }}\n\
         \x20 \"o*\": {{ input: 1.0, output: 4.0 }}\n\
         budgets:\n\
         \x20 - {{ name: tokens, limit: {{ tokens: 1000 }}, window: 1h, on_exhaust: halt }}\n\
         \x20 - {{ name: spend, limit: {{ usd: 5 }}, window: 24h, on_exhaust: escalate }}\n\
         \x20 - {{ name: all-calls, limit: {{ calls: 100 }}, window: 1m, on_exhaust: quarantine }}\n\
         \x20 - {{ name: ticket-reads, limit: {{ calls: 10 }}, window: 1m, on_exhaust: halt, server: tickets, tool: \"get_*\" }}\n\
         \x20 - {{ name: billing-msgs, limit: {{ calls: 5 }}, window: 1m, on_exhaust: halt, server: billing }}\n"
    ))
}

fn scope_names(p: &PolicySet, server: &str, call: &Call) -> Vec<String> {
    p.budget_scope(&ctx("a", server, "/", call))
        .map(|s| s.budgets.iter().map(|b| b.name.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn an_llm_call_counts_against_token_and_usd_budgets_only() {
    let p = budgeted();
    let c = llm_call(LlmApi::ChatCompletions, "gpt-4o-mini");
    assert_eq!(scope_names(&p, "127.0.0.2:8000", &c), ["tokens", "spend"]);
    let scope = p
        .budget_scope(&ctx("a", "127.0.0.2:8000", "/", &c))
        .expect("budgeted");
    assert_eq!(scope.max_output_tokens, Some(256));
    assert!(scope.counts_usd());
    assert_eq!(scope.price("gpt-4o-mini").map(|p| p.output), Some(0.6));
    // A key read as a glob prices the models it matches; others have none.
    assert_eq!(scope.price("o3-mini").map(|p| p.input), Some(1.0));
    assert_eq!(scope.price("claude"), None);
}

#[test]
fn tool_calls_count_against_call_budgets_scoped_by_server_and_tool() {
    let p = budgeted();
    let get = mcp_call("tools/call", Some("get_ticket"), None);
    assert_eq!(
        scope_names(&p, "127.0.0.2:7001", &get),
        ["all-calls", "ticket-reads"]
    );
    let list = mcp_call("tools/call", Some("list_tickets"), None);
    assert_eq!(scope_names(&p, "127.0.0.2:7001", &list), ["all-calls"]);
    assert_eq!(scope_names(&p, "127.0.0.2:7002", &get), ["all-calls"]);
    // Other MCP methods are not budgeted.
    let read = mcp_call("resources/read", Some("ticket://1"), None);
    assert!(scope_names(&p, "127.0.0.2:7001", &read).is_empty());
}

#[test]
fn a2a_messages_count_against_call_budgets_of_their_peer() {
    let p = budgeted();
    let send = call(Protocol::A2a, "SendMessage", None, None);
    assert_eq!(
        scope_names(&p, "127.0.0.2:9000", &send),
        ["all-calls", "billing-msgs"]
    );
    let legacy = call(Protocol::A2a, "message/stream", None, None);
    assert_eq!(
        scope_names(&p, "127.0.0.2:9000", &legacy),
        ["all-calls", "billing-msgs"]
    );
    let get = call(Protocol::A2a, "GetTask", None, None);
    assert!(scope_names(&p, "127.0.0.2:9000", &get).is_empty());
}

#[test]
fn an_agent_without_budgets_has_no_scope() {
    let p = tickets();
    let c = mcp_call("tools/call", Some("get_ticket"), None);
    assert!(p
        .budget_scope(&ctx("a", "127.0.0.2:7001", "/mcp", &c))
        .is_none());
}

/// `approvals[]` (ARCHITECTURE.md 5.1): a call an approvals rule names is
/// held, never forwarded unapproved; one it cannot decide is held too.
fn billing() -> PolicySet {
    policy(&format!(
        "{HEAD}egress:\n  allow: [\"127.0.0.2:7001\"]\n\
         mcp:\n\
         \x20 - server: billing\n\
         \x20   address: \"127.0.0.2:7001\"\n\
         \x20   tools: {{ read: [\"get_invoice\"], write: [\"refund\"] }}\n\
         \x20   grant: [read, write]\n\
         approvals:\n\
         \x20 - name: big-refund\n\
         \x20   when: 'server == \"billing\" && tool == \"refund\" && args.amount > 100'\n\
         \x20   approvers: {{ users: [alice, bob], required: 2 }}\n\
         \x20   timeout: 15m\n"
    ))
}

fn decide_billing(p: &PolicySet, call: &Call) -> Decision {
    p.decide(&ctx("a", "127.0.0.2:7001", "/", call))
}

#[test]
fn a_call_an_approvals_rule_names_is_held() {
    let p = billing();
    let big = mcp_call("tools/call", Some("refund"), Some(r#"{"amount": 500}"#));
    match decide_billing(&p, &big) {
        Decision::Hold { rule, reason } => {
            assert_eq!(&*rule, "approvals[big-refund]");
            assert!(reason.starts_with("approvals[big-refund] "), "{reason}");
            assert!(reason.contains("t.yaml"), "{reason}");
        }
        other => panic!("a big refund went through unapproved: {other:?}"),
    }
}

#[test]
fn calls_the_rule_does_not_name_are_decided_as_before() {
    let p = billing();
    let small = mcp_call("tools/call", Some("refund"), Some(r#"{"amount": 5}"#));
    assert_eq!(
        decide_billing(&p, &small).rule(),
        "mcp[billing].grant.write"
    );
    let read = mcp_call("tools/call", Some("get_invoice"), None);
    assert_eq!(decide_billing(&p, &read).rule(), "mcp[billing].grant.read");
    let unknown = mcp_call("tools/call", Some("wire"), Some(r#"{"amount": 500}"#));
    assert_eq!(
        decide_billing(&p, &unknown).rule(),
        "mcp[billing].tools.unknown"
    );
}

#[test]
fn a_call_the_rule_cannot_decide_is_held() {
    let p = billing();
    // `args.amount` is missing: the condition cannot be evaluated.
    let unclear = mcp_call("tools/call", Some("refund"), Some(r#"{"to": "x"}"#));
    match decide_billing(&p, &unclear) {
        Decision::Hold { rule, reason } => {
            assert_eq!(&*rule, "approvals[big-refund]");
            assert!(reason.contains("cannot be decided"), "{reason}");
        }
        other => panic!("an undecidable refund went through: {other:?}"),
    }
}
