//! MCP through the mesh with the real peers, unmodified, inside governed
//! cgroups (root: real kernel, real cgroups). The official Python SDK client
//! in its three modes against the SDK's server and server-everything, the
//! 2024-11-05 SSE transport, elicitation and `input_required` round trips.
//! Every call must pass intact and be seen as a Call with the right name and
//! arguments.
use mesh_tests::{
    egress_policy,
    peers::{python_argv, spawn_server, PeerKind, PeerServer},
    stderr, stdout, Mesh,
};
use serde_json::{json, Value};

/// Runs `mcp_client.py` as agent `agent` through the mesh and checks it
/// exited 0.
fn client(mesh: &Mesh, agent: &str, server: &PeerServer, args: &[&str]) -> String {
    let url = server.url();
    let mut full = vec!["--url", url.as_str()];
    full.extend_from_slice(args);
    let argv = python_argv("mcp_client.py", &full);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = mesh.exec(agent, &argv);
    assert!(
        out.status.success(),
        "mcp_client {args:?} failed:\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        stdout(&out),
        stderr(&out),
        mesh.daemon_log()
    );
    stdout(&out)
}

fn calls(mesh: &Mesh, server: &PeerServer, until: impl Fn(&[&Value]) -> bool) -> Vec<Value> {
    mesh.call_records(&server.addr().to_string(), |records| {
        until(&records.iter().collect::<Vec<_>>())
    })
}

fn find<'a>(calls: &'a [Value], method: &str, name: Option<&str>) -> Option<&'a Value> {
    calls.iter().find(|r| {
        r["call"]["method"] == method
            && name.is_none_or(|n| r["call"]["name"] == n)
            && r["call"]["direction"] == "client_to_server"
    })
}

fn has(calls: &[&Value], method: &str, name: &str) -> bool {
    calls
        .iter()
        .any(|r| r["call"]["method"] == method && r["call"]["name"] == name)
}

fn assert_call(calls: &[Value], method: &str, name: &str, arguments: Option<Value>) {
    let r = find(calls, method, Some(name))
        .unwrap_or_else(|| panic!("no {method} {name} in {calls:#?}"));
    assert_eq!(r["verdict"], "forwarded", "{r:#?}");
    assert_eq!(r["protocol"], "mcp", "{r:#?}");
    assert_eq!(r["call"]["outcome"], "result", "{r:#?}");
    if let Some(args) = arguments {
        assert_eq!(r["call"]["arguments"], args, "{r:#?}");
    }
}

fn sdk_basic(mode: &str, expect_version: &str) {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let agent = format!("mcp-{}", mode.replace('-', ""));
    let mesh = Mesh::start(
        &agent,
        &[(
            "p.yaml",
            &egress_policy(&agent, &[server.addr().to_string()]),
        )],
    );
    let out = client(
        &mesh,
        &agent,
        &server,
        &["--mode", mode, "--script", "basic"],
    );
    assert!(out.contains("ada"), "{out}");
    let calls = calls(&mesh, &server, |c| {
        has(c, "tools/call", "add") && has(c, "prompts/get", "greet")
    });
    assert!(find(&calls, "tools/list", None).is_some(), "{calls:#?}");
    assert_call(&calls, "tools/call", "add", Some(json!({"a": 2, "b": 3})));
    assert_call(&calls, "resources/read", "config://app", None);
    assert_call(&calls, "prompts/get", "greet", Some(json!({"name": "ada"})));
    let add = find(&calls, "tools/call", Some("add")).expect("add");
    assert_eq!(add["call"]["version"], expect_version, "{add:#?}");
    assert_eq!(add["agent"], agent.as_str());
    assert!(add["call"]["jsonrpc_id"].is_number(), "{add:#?}");
    // The metrics saw the tool call.
    let metrics = mesh.metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_tool_calls_total{")
                && l.contains(&format!("agent=\"{agent}\""))
                && l.contains("tool=\"add\"")
                && l.contains("decision=\"allow\"")),
        "{metrics}"
    );
}

#[test]
fn sdk_client_auto_mode_speaks_2026_through_the_mesh() {
    sdk_basic("auto", "2026-07-28");
}

#[test]
fn sdk_client_legacy_mode_speaks_sessions_through_the_mesh() {
    sdk_basic("legacy", "2025-11-25");
}

#[test]
fn server_everything_through_the_mesh() {
    let server = spawn_server(PeerKind::Everything, "127.0.0.2", 0);
    let mesh = Mesh::start(
        "everything",
        &[(
            "p.yaml",
            &egress_policy("everything", &[server.addr().to_string()]),
        )],
    );
    let out = client(
        &mesh,
        "everything",
        &server,
        &["--mode", "auto", "--script", "everything"],
    );
    assert!(out.contains("The sum of 1 and 2 is 3"), "{out}");
    let calls = calls(&mesh, &server, |c| has(c, "tools/call", "get-sum"));
    assert!(find(&calls, "tools/list", None).is_some(), "{calls:#?}");
    assert_call(
        &calls,
        "tools/call",
        "get-sum",
        Some(json!({"a": 1, "b": 2})),
    );
    assert!(find(&calls, "resources/read", None).is_some(), "{calls:#?}");
    assert!(find(&calls, "prompts/get", None).is_some(), "{calls:#?}");
    // It does not speak 2026: the discover probe failed and the client fell
    // back to a session.
    let get_sum = find(&calls, "tools/call", Some("get-sum")).expect("get-sum");
    assert!(get_sum["call"]["session"].is_string(), "{get_sum:#?}");
}

#[test]
fn elicitation_round_trip_in_legacy_mode() {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let mesh = Mesh::start(
        "elicit",
        &[(
            "p.yaml",
            &egress_policy("elicit", &[server.addr().to_string()]),
        )],
    );
    let out = client(
        &mesh,
        "elicit",
        &server,
        &["--mode", "legacy", "--script", "elicit"],
    );
    assert!(out.contains(r#"\"deleted\": true"#), "{out}");
    let calls = calls(&mesh, &server, |c| {
        c.iter()
            .any(|r| r["call"]["method"] == "elicitation/create")
    });
    let ask = calls
        .iter()
        .find(|r| r["call"]["method"] == "elicitation/create")
        .expect("elicitation");
    assert_eq!(ask["call"]["direction"], "server_to_client", "{ask:#?}");
    assert_eq!(ask["call"]["outcome"], "result", "{ask:#?}");
    assert_call(&calls, "tools/call", "confirm_delete", None);
}

#[test]
fn input_required_round_trip_in_2026_mode() {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let mesh = Mesh::start(
        "inputreq",
        &[(
            "p.yaml",
            &egress_policy("inputreq", &[server.addr().to_string()]),
        )],
    );
    let out = client(
        &mesh,
        "inputreq",
        &server,
        &["--mode", "2026-07-28", "--script", "elicit"],
    );
    assert!(out.contains(r#"\"deleted\": true"#), "{out}");
    let calls = calls(&mesh, &server, |c| {
        c.iter()
            .filter(|r| r["call"]["name"] == "confirm_delete")
            .count()
            >= 2
    });
    let tries: Vec<&Value> = calls
        .iter()
        .filter(|r| r["call"]["method"] == "tools/call" && r["call"]["name"] == "confirm_delete")
        .collect();
    assert_eq!(tries.len(), 2, "{calls:#?}");
    assert_eq!(tries[0]["call"]["outcome"], "input_required", "{calls:#?}");
    assert_eq!(tries[1]["call"]["outcome"], "result", "{calls:#?}");
}

#[test]
fn the_2024_sse_transport_works_through_the_mesh() {
    let server = spawn_server(PeerKind::McpSse, "127.0.0.3", 0);
    let mesh = Mesh::start(
        "legacysse",
        &[(
            "p.yaml",
            &egress_policy("legacysse", &[server.addr().to_string()]),
        )],
    );
    let out = client(
        &mesh,
        "legacysse",
        &server,
        &[
            "--mode",
            "legacy",
            "--transport",
            "sse",
            "--script",
            "basic",
        ],
    );
    assert!(out.contains("ada"), "{out}");
    let calls = calls(&mesh, &server, |c| has(c, "prompts/get", "greet"));
    // Each POSTed call's outcome arrived on the GET stream.
    assert_call(&calls, "tools/call", "add", Some(json!({"a": 2, "b": 3})));
    assert_call(&calls, "prompts/get", "greet", Some(json!({"name": "ada"})));
    let add = find(&calls, "tools/call", Some("add")).expect("add");
    assert!(add["call"]["session"].is_string(), "{add:#?}");
}
