//! MCP policy end to end (ARCHITECTURE.md 5.1 and 6), root: a real daemon,
//! real cgroups, the official Python SDK client inside a governed cgroup
//! against the SDK's server and @modelcontextprotocol/server-everything.
//! Allowed tools work; denied, unknown and ungranted tools get the JSON-RPC
//! error -32001 naming the rule; `when` conditions read arguments; trusted
//! annotations classify tools; list results show exactly what may be used;
//! resources and prompts follow their allow lists. Every case is checked on
//! what the client saw and on the daemon's records.
use std::collections::BTreeSet;

use mesh_tests::{
    peers::{python_argv, python_command, spawn_server, PeerKind, PeerServer},
    stderr, stdout, Mesh,
};
use serde_json::{json, Value};

/// The policy error code of section 6.
const REFUSED: i64 = -32001;

/// One agent's policy: egress to `server` and an `mcp` section.
fn policy(agent: &str, server: &PeerServer, mcp: &str) -> String {
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {agent} }}\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [\"{addr}\"]\nmcp:\n{mcp}",
        addr = server.addr()
    )
}

/// Runs `mcp_client.py --script steps` as `agent` through the mesh; returns
/// one JSON value per step (the connect and done lines dropped).
fn steps(mesh: &Mesh, agent: &str, server: &PeerServer, mode: &str, ops: &Value) -> Vec<Value> {
    let url = server.url();
    let ops = ops.to_string();
    let argv = python_argv(
        "mcp_client.py",
        &[
            "--url", &url, "--mode", mode, "--script", "steps", "--steps", &ops,
        ],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = mesh.exec(agent, &argv);
    assert!(
        out.status.success(),
        "mcp_client ({agent}, {mode}) failed:\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        stdout(&out),
        stderr(&out),
        mesh.daemon_log()
    );
    parse_steps(&stdout(&out))
}

fn parse_steps(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["step"] != "connect" && v["step"] != "done")
        .collect()
}

/// The same steps from the test process itself (not governed): what the
/// server offers without the mesh.
fn steps_direct(server: &PeerServer, ops: &Value) -> Vec<Value> {
    let url = server.url();
    let ops = ops.to_string();
    let out = python_command(
        "mcp_client.py",
        &[
            "--url", &url, "--mode", "auto", "--script", "steps", "--steps", &ops,
        ],
    )
    .output()
    .expect("run mcp_client directly");
    assert!(
        out.status.success(),
        "direct mcp_client failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    parse_steps(&stdout(&out))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn listed(step: &Value) -> BTreeSet<String> {
    assert_eq!(step["ok"], true, "{step:#}");
    step["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {step:#}"))
        .iter()
        .map(|v| v.as_str().expect("item name").to_owned())
        .collect()
}

/// The step at `i` succeeded.
fn ok(steps: &[Value], i: usize) -> &Value {
    let s = &steps[i];
    assert_eq!(s["ok"], true, "step {i}: {s:#}\nall: {steps:#?}");
    assert_ne!(s["is_error"], true, "step {i}: {s:#}");
    s
}

/// The step at `i` was refused by the mesh (JSON-RPC -32001) under a rule
/// for which `rule_ok` holds; returns the rule.
fn refused(steps: &[Value], i: usize, rule_ok: impl Fn(&str) -> bool) -> String {
    let s = &steps[i];
    assert_eq!(s["ok"], false, "step {i}: {s:#}\nall: {steps:#?}");
    assert_eq!(s["code"], REFUSED, "step {i}: {s:#}");
    let rule = s["data"]["rule"].as_str().unwrap_or_default().to_owned();
    assert!(
        rule_ok(&rule),
        "step {i}: unexpected rule {rule:?} in {s:#}"
    );
    // The message names the rule (section 6).
    assert!(
        s["message"].as_str().is_some_and(|m| m.contains(&rule)),
        "step {i}: message does not name the rule: {s:#}"
    );
    assert!(s["data"]["audit_id"].is_number(), "{s:#}");
    rule
}

/// Request records to `server` once `n` of them match `pred`.
fn records_where(
    mesh: &Mesh,
    server: &PeerServer,
    n: usize,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let all = mesh.call_records(&server.addr().to_string(), |rs| {
        rs.iter().filter(|r| pred(r)).count() >= n
    });
    all.into_iter().filter(|r| pred(r)).collect()
}

fn is_call(r: &Value, agent: &str, method: &str, name: Option<&str>) -> bool {
    r["agent"] == agent
        && r["call"]["method"] == method
        && r["call"]["direction"] == "client_to_server"
        && name.is_none_or(|n| r["call"]["name"] == n)
}

/// The daemon refused `method name` for `agent` under `rule` and never
/// forwarded it.
fn assert_refused_record(
    mesh: &Mesh,
    server: &PeerServer,
    agent: &str,
    method: &str,
    name: &str,
    rule: &str,
) {
    let rs = records_where(mesh, server, 1, |r| is_call(r, agent, method, Some(name)));
    assert!(!rs.is_empty(), "no record of {agent} {method} {name}");
    for r in &rs {
        assert_eq!(r["verdict"], "refused_policy", "{r:#}");
        assert_eq!(r["rule"], rule, "{r:#}");
        assert!(r["reason"].is_string(), "{r:#}");
    }
}

/// The daemon forwarded `method name` for `agent` and the server answered
/// with a result (other calls of the same name may have been refused).
fn assert_forwarded_record(
    mesh: &Mesh,
    server: &PeerServer,
    agent: &str,
    method: &str,
    name: &str,
) {
    let forwarded = |r: &Value| {
        is_call(r, agent, method, Some(name))
            && r["verdict"] == "forwarded"
            && r["call"]["outcome"] == "result"
    };
    let rs = records_where(mesh, server, 1, forwarded);
    assert!(
        !rs.is_empty(),
        "no forwarded {agent} {method} {name} with a result in {:#?}",
        records_where(mesh, server, 0, |r| is_call(r, agent, method, Some(name)))
    );
}

/// The list call's record says how many items were removed.
fn assert_hidden(mesh: &Mesh, server: &PeerServer, agent: &str, method: &str, hidden: usize) {
    let rs = records_where(mesh, server, 1, |r| is_call(r, agent, method, None));
    let r = rs
        .first()
        .unwrap_or_else(|| panic!("no {method} record for {agent}"));
    assert_eq!(r["verdict"], "forwarded", "{r:#}");
    assert_eq!(r["call"]["outcome"], "result", "{r:#}");
    if hidden == 0 {
        assert!(r["call"]["hidden"].is_null(), "{r:#}");
    } else {
        assert_eq!(r["call"]["hidden"], hidden, "{r:#}");
    }
}

/// The calculator server (tests/peers/mcp_server.py) under an `mcp` section.
const CALC_MCP: &str = "  - server: calc
    address: \"ADDR\"
    tools:
      read: [\"lookup\", \"echo\"]
      write: [\"add\", \"remove\"]
      deny: [\"remove\"]
    grant: [read, write]
    resources: { allow: [\"config://app\"] }
    prompts: { allow: [\"greet\"] }
    when:
      - 'tool != \"add\" || args.a < 10'
";

/// Agent granted only `read` on the same server.
const CALC_READER_MCP: &str = "  - server: calc
    address: \"ADDR\"
    tools:
      read: [\"lookup\", \"echo\"]
      write: [\"add\", \"remove\"]
    grant: [read]
";

/// Trusted annotations: only `echo` has a glob; `lookup` is annotated
/// read-only, `remove` not, `add` not annotated (so, listed: write).
const CALC_TRUSTING_MCP: &str = "  - server: calc
    address: \"ADDR\"
    trust_annotations: true
    tools:
      read: [\"echo\"]
    grant: [read]
";

fn sdk_policies(server: &PeerServer, suffix: &str) -> Vec<(String, String)> {
    let addr = server.addr().to_string();
    [
        ("calc", CALC_MCP),
        ("reader", CALC_READER_MCP),
        ("trusting", CALC_TRUSTING_MCP),
    ]
    .into_iter()
    .map(|(agent, mcp)| {
        let agent = format!("{agent}{suffix}");
        (
            format!("{agent}.yaml"),
            policy(&agent, server, &mcp.replace("ADDR", &addr)),
        )
    })
    .collect()
}

fn sdk_server_policy(mode: &str) {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let suffix = mode.replace('-', "");
    let files = sdk_policies(&server, &suffix);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let mesh = Mesh::start(&format!("polmcp-{suffix}"), &files);
    let calc = format!("calc{suffix}");
    let reader = format!("reader{suffix}");
    let trusting = format!("trusting{suffix}");

    // Allowed, denied (glob), unknown (no glob), conditions on arguments,
    // resources and prompts allow lists.
    let s = steps(
        &mesh,
        &calc,
        &server,
        mode,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "add", "args": {"a": 2, "b": 3}},
            {"op": "call_tool", "name": "remove", "args": {"key": "k"}},
            {"op": "call_tool", "name": "confirm_delete_direct", "args": {"item": "x"}},
            {"op": "call_tool", "name": "add", "args": {"a": 20, "b": 3}},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "config://app"},
            {"op": "list_prompts"},
            {"op": "get_prompt", "name": "greet", "args": {"name": "ada"}},
        ]),
    );
    assert_eq!(listed(&s[0]), set(&["add", "echo", "lookup"]), "{s:#?}");
    assert_eq!(ok(&s, 1)["text"], "5");
    let deny_rule = refused(&s, 2, |r| r == "mcp[calc].tools.deny[0]");
    let unknown_rule = refused(&s, 3, |r| r == "mcp[calc].tools.unknown");
    assert!(
        s[3]["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown tool")),
        "{:#}",
        s[3]
    );
    let when_rule = refused(&s, 4, |r| r == "mcp[calc].when[0]");
    assert_eq!(listed(&s[5]), set(&["config://app"]));
    ok(&s, 6);
    assert_eq!(listed(&s[7]), set(&["greet"]));
    ok(&s, 8);

    assert_hidden(&mesh, &server, &calc, "tools/list", 3);
    assert_forwarded_record(&mesh, &server, &calc, "tools/call", "add");
    assert_refused_record(&mesh, &server, &calc, "tools/call", "remove", &deny_rule);
    assert_refused_record(
        &mesh,
        &server,
        &calc,
        "tools/call",
        "confirm_delete_direct",
        &unknown_rule,
    );
    let adds = records_where(&mesh, &server, 2, |r| {
        is_call(r, &calc, "tools/call", Some("add"))
    });
    assert!(
        adds.iter().any(|r| r["verdict"] == "refused_policy"
            && r["rule"] == when_rule.as_str()
            && r["call"]["arguments"] == json!({"a": 20, "b": 3})),
        "{adds:#?}"
    );
    assert_forwarded_record(&mesh, &server, &calc, "resources/read", "config://app");
    assert_forwarded_record(&mesh, &server, &calc, "prompts/get", "greet");

    // Classes: granted read only, a write tool is refused.
    let s = steps(
        &mesh,
        &reader,
        &server,
        mode,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "lookup", "args": {"key": "k"}},
            {"op": "call_tool", "name": "add", "args": {"a": 1, "b": 1}},
            {"op": "read_resource", "uri": "config://app"},
            {"op": "get_prompt", "name": "greet", "args": {"name": "ada"}},
        ]),
    );
    assert_eq!(listed(&s[0]), set(&["echo", "lookup"]), "{s:#?}");
    assert_eq!(ok(&s, 1)["text"], "value of k");
    let grant_rule = refused(&s, 2, |r| r == "mcp[calc].grant");
    // No resources/prompts lists: nothing is allowed.
    refused(&s, 3, |r| r == "mcp[calc].resources.allow");
    refused(&s, 4, |r| r == "mcp[calc].prompts.allow");
    assert_refused_record(&mesh, &server, &reader, "tools/call", "add", &grant_rule);
    assert_hidden(&mesh, &server, &reader, "tools/list", 4);

    // Trusted annotations: lookup (readOnlyHint) is read, remove and add are
    // write once the server listed them.
    let s = steps(
        &mesh,
        &trusting,
        &server,
        mode,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "lookup", "args": {"key": "k"}},
            {"op": "call_tool", "name": "remove", "args": {"key": "k"}},
            {"op": "call_tool", "name": "add", "args": {"a": 1, "b": 1}},
            {"op": "call_tool", "name": "echo", "args": {"text": "hi"}},
        ]),
    );
    assert_eq!(listed(&s[0]), set(&["echo", "lookup"]), "{s:#?}");
    assert_eq!(ok(&s, 1)["text"], "value of k");
    let write_rule = refused(&s, 2, |r| r == "mcp[calc].grant");
    refused(&s, 3, |r| r == "mcp[calc].grant");
    assert_eq!(ok(&s, 4)["text"], "hi");
    assert_forwarded_record(&mesh, &server, &trusting, "tools/call", "lookup");
    assert_refused_record(
        &mesh,
        &server,
        &trusting,
        "tools/call",
        "remove",
        &write_rule,
    );

    // Metrics: tool calls carry the deciding rule (a refused call's names
    // are the agent's to invent: never labels); decisions were timed.
    let metrics = mesh.metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_tool_calls_total{")
                && l.contains(&format!("agent=\"{calc}\""))
                && l.contains("tool=\"other\"")
                && l.contains("decision=\"refuse\"")
                && l.contains(&format!("rule=\"{deny_rule}\""))),
        "{metrics}"
    );
    let decisions: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_policy_decision_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mesh_policy_decision_seconds_count in {metrics}"));
    assert!(decisions >= 15.0, "{decisions} decisions timed\n{metrics}");
}

#[test]
fn sdk_client_auto_mode_under_an_mcp_policy() {
    sdk_server_policy("auto");
}

#[test]
fn sdk_client_legacy_mode_under_an_mcp_policy() {
    sdk_server_policy("legacy");
}

#[test]
fn server_everything_under_an_mcp_policy() {
    let server = spawn_server(PeerKind::Everything, "127.0.0.2", 0);
    let agent = "everypol";
    let mcp = format!(
        "  - server: everything
    address: \"{addr}\"
    trust_annotations: true
    tools:
      read: [\"echo\"]
      deny: [\"get-env\"]
    grant: [read]
    resources: {{ allow: [\"demo://resource/static/document/architecture.md\"] }}
    prompts: {{ allow: [\"args-prompt\"] }}
",
        addr = server.addr()
    );
    let text = policy(agent, &server, &mcp);
    let mesh = Mesh::start(agent, &[("p.yaml", &text)]);

    // What the server offers, seen without the mesh.
    let offered = steps_direct(
        &server,
        &json!([{"op": "list_tools"}, {"op": "list_resources"}, {"op": "list_prompts"}]),
    );
    let annotations = offered[0]["annotations"]
        .as_object()
        .unwrap_or_else(|| panic!("{offered:#?}"));
    let read_only: BTreeSet<String> = annotations
        .iter()
        .filter(|(_, a)| a["readOnlyHint"] == true)
        .map(|(n, _)| n.clone())
        .collect();
    let expected_tools: BTreeSet<String> = read_only
        .iter()
        .filter(|n| *n != "get-env")
        .cloned()
        .chain(["echo".to_owned()])
        .collect();
    assert!(read_only.contains("get-sum"), "{offered:#?}");
    assert!(
        annotations
            .get("toggle-simulated-logging")
            .is_some_and(|a| a["readOnlyHint"] == false),
        "{offered:#?}"
    );
    let all_tools = listed(&offered[0]);
    let all_resources = listed(&offered[1]);
    assert!(
        all_resources.contains("demo://resource/static/document/architecture.md"),
        "{offered:#?}"
    );
    assert!(
        listed(&offered[2]).contains("simple-prompt"),
        "{offered:#?}"
    );

    let s = steps(
        &mesh,
        agent,
        &server,
        "auto",
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get-sum", "args": {"a": 1, "b": 2}},
            {"op": "call_tool", "name": "toggle-simulated-logging", "args": {}},
            {"op": "call_tool", "name": "get-env", "args": {}},
            {"op": "call_tool", "name": "no-such-tool", "args": {}},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "demo://resource/static/document/architecture.md"},
            {"op": "read_resource", "uri": "demo://resource/static/document/structure.md"},
            {"op": "list_prompts"},
            {"op": "get_prompt", "name": "args-prompt", "args": {"city": "Paris"}},
            {"op": "get_prompt", "name": "simple-prompt", "args": {}},
        ]),
    );
    assert_eq!(listed(&s[0]), expected_tools, "{s:#?}");
    assert!(ok(&s, 1)["text"].as_str().is_some_and(|t| t.contains('3')));
    let write_rule = refused(&s, 2, |r| r == "mcp[everything].grant");
    let deny_rule = refused(&s, 3, |r| r == "mcp[everything].tools.deny[0]");
    refused(&s, 4, |r| r == "mcp[everything].tools.unknown");
    assert_eq!(
        listed(&s[5]),
        set(&["demo://resource/static/document/architecture.md"]),
        "{s:#?}"
    );
    ok(&s, 6);
    let resource_rule = refused(&s, 7, |r| r == "mcp[everything].resources.allow");
    assert_eq!(listed(&s[8]), set(&["args-prompt"]), "{s:#?}");
    ok(&s, 9);
    let prompt_rule = refused(&s, 10, |r| r == "mcp[everything].prompts.allow");

    assert_hidden(
        &mesh,
        &server,
        agent,
        "tools/list",
        all_tools.len() - expected_tools.len(),
    );
    assert_hidden(
        &mesh,
        &server,
        agent,
        "resources/list",
        all_resources.len() - 1,
    );
    assert_forwarded_record(&mesh, &server, agent, "tools/call", "get-sum");
    assert_refused_record(
        &mesh,
        &server,
        agent,
        "tools/call",
        "toggle-simulated-logging",
        &write_rule,
    );
    assert_refused_record(&mesh, &server, agent, "tools/call", "get-env", &deny_rule);
    assert_forwarded_record(
        &mesh,
        &server,
        agent,
        "resources/read",
        "demo://resource/static/document/architecture.md",
    );
    assert_refused_record(
        &mesh,
        &server,
        agent,
        "resources/read",
        "demo://resource/static/document/structure.md",
        &resource_rule,
    );
    assert_forwarded_record(&mesh, &server, agent, "prompts/get", "args-prompt");
    assert_refused_record(
        &mesh,
        &server,
        agent,
        "prompts/get",
        "simple-prompt",
        &prompt_rule,
    );
}

/// A call an approvals rule names is never forwarded unapproved: holding it
/// for a human is not built, so it is refused in the JSON-RPC shape with a
/// reason saying approval is required, and recorded as held; calls the rule
/// does not name go through.
#[test]
fn a_call_an_approvals_rule_names_is_refused_saying_approval_is_required() {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let agent = "approvals";
    let mcp = CALC_MCP.replace("ADDR", &server.addr().to_string());
    let text = format!(
        "{}approvals:\n  - name: big-add\n    when: 'tool == \"add\" && args.b > 2'\n    \
         approvers: {{ users: [alice], required: 1 }}\n    timeout: 5m\n",
        policy(agent, &server, &mcp)
    );
    let mesh = Mesh::start("polmcp-approvals", &[("approvals.yaml", &text)]);
    let s = steps(
        &mesh,
        agent,
        &server,
        "auto",
        &json!([
            {"op": "call_tool", "name": "add", "args": {"a": 2, "b": 3}},
            {"op": "call_tool", "name": "add", "args": {"a": 2, "b": 1}},
        ]),
    );
    refused(&s, 0, |r| r == "approvals[big-add]");
    assert!(
        s[0]["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("approval required: approvals[big-add]")),
        "{:#}",
        s[0]
    );
    assert_eq!(ok(&s, 1)["text"], "3");
    let held = records_where(&mesh, &server, 1, |r| {
        is_call(r, agent, "tools/call", Some("add")) && r["rule"] == "approvals[big-add]"
    });
    assert!(!held.is_empty(), "no record of the held call");
    for r in &held {
        assert_eq!(r["verdict"], "held", "{r:#}");
    }
}
