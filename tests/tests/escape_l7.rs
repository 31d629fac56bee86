//! The escape suite, L7 routes: a governed agent shapes its bytes to get a
//! call past the decision (a reply to nothing, a pause, a content type, an
//! encoding, a path spelling, headers that claim another protocol, spend the
//! mesh cannot count). Each test sends what an attacker would, from an
//! unmodified process under `meshctl exec`, and fails if anything reaches
//! the destination or the refusal is not recorded. Root tier; the kernel,
//! cgroup and admin routes are in `escape.rs`. docs/security.md lists every
//! route with its test.
use mesh_tests::*;

/// Connects to HOST PORT, sends the hex-encoded bytes, optionally shuts its
/// sending side (`half-close`), and prints everything it got back.
const RAW_CLIENT: &str = r#"
import socket, sys
host, port, how, data = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
s = socket.create_connection((host, port), timeout=30)
s.sendall(data)
if how == "half-close":
    s.shutdown(socket.SHUT_WR)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except OSError as e:
    out += b"RECV-ERROR " + str(e).encode()
sys.stdout.write(out.decode("latin-1"))
"#;

/// Sends `request` as `agent` to `server` and returns what came back.
fn send(mesh: &Mesh, agent: &str, server: &HttpServer, how: &str, request: &[u8]) -> String {
    let hex: String = request.iter().map(|b| format!("{b:02x}")).collect();
    let (ip, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let out = mesh.exec(agent, &["python3", "-c", RAW_CLIENT, &ip, &port, how, &hex]);
    assert!(out.status.success(), "raw client: {}", stderr(&out));
    stdout(&out)
}

fn post(path: &str, content_type: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: tools.example\r\ncontent-type: {content_type}\r\n\
         accept: application/json, text/event-stream\r\n{extra}content-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `agent` may reach `servers`; the first is an MCP server (its endpoint at
/// `/mcp`) whose `delete` tool is denied.
fn mcp_policy(agent: &str, servers: &[&HttpServer], extra: &str) -> String {
    let allow: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    format!(
        "{}mcp:\n  - server: tools\n    address: \"{}/mcp\"\n    tools:\n      read: [\"*\"]\n      \
         deny: [\"delete\"]\n    grant: [read]\n{extra}",
        egress_policy(agent, &allow),
        servers[0].addr
    )
}

/// Waits for a record under `rule` to `server`; panics naming what exists.
fn recorded(mesh: &Mesh, server: &HttpServer, rule: &str) -> serde_json::Value {
    let dst = server.addr.to_string();
    let records = mesh.records_until(|r| r["rule"] == rule && r["original_destination"] == dst);
    records
        .into_iter()
        .find(|r| r["rule"] == rule && r["original_destination"] == dst)
        .unwrap_or_else(|| panic!("no record under {rule} to {dst}"))
}

const DELETE: &str =
    r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete","arguments":{}}}"#;
const REPLY: &str = r#"{"jsonrpc":"2.0","id":41,"result":{"exfiltrated":"secret"}}"#;

#[test]
fn a_json_rpc_reply_to_no_request_carries_nothing_anywhere() {
    require_root();
    let server = HttpServer::start("127.0.0.1");
    let policy = egress_policy("bot", &[server.addr.to_string()]);
    let mesh = Mesh::start("escape-reply", &[("bot.yaml", &policy)]);

    let said = send(
        &mesh,
        "bot",
        &server,
        "",
        &post("/mcp", "application/json", "", REPLY),
    );
    assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    assert!(said.contains("mcp.reply.unmatched"), "{said}");
    recorded(&mesh, &server, "mcp.reply.unmatched");
    // An agent without any policy gets no further with one.
    let said = send(
        &mesh,
        "nobody",
        &server,
        "",
        &post("/", "application/json", "", REPLY),
    );
    assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    assert_eq!(server.count(), 0, "a reply reached the destination");
}

#[test]
fn going_quiet_does_not_downgrade_an_mcp_destination_to_opaque_bytes() {
    require_root();
    let server = HttpServer::start("127.0.0.1");
    let mesh = Mesh::start(
        "escape-quiet",
        &[("bot.yaml", &mcp_policy("bot", &[&server], ""))],
    );
    // Nothing at all, then a prefix of a request: each then goes quiet
    // (half-closed). Relayed as opaque bytes, the request would have
    // reached the server unread.
    for first in [&b""[..], b"POS"] {
        let said = send(&mesh, "bot", &server, "half-close", first);
        assert!(!said.contains("HTTP/1.1 200"), "{said}");
    }
    let r = recorded(&mesh, &server, "l7.unreadable");
    assert_eq!(r["verdict"], "refused_policy", "{r:#}");
    assert_eq!(server.count(), 0, "the connection was relayed");
}

#[test]
fn headers_cannot_steer_a_call_past_its_decision() {
    require_root();
    let mcp = HttpServer::start("127.0.0.1");
    let llm = HttpServer::start("127.0.0.1");
    let llm_section = format!(
        "llm:\n  - {{ provider: openai, address: \"{}\", models: [\"gpt-small\"] }}\n",
        llm.addr
    );
    let policy = mcp_policy("bot", &[&mcp, &llm], &llm_section);
    let mesh = Mesh::start("escape-steer", &[("bot.yaml", &policy)]);

    // A denied tool sent as text/plain is still an MCP call.
    let said = send(
        &mesh,
        "bot",
        &mcp,
        "",
        &post("/mcp", "text/plain", "", DELETE),
    );
    assert!(said.contains("-32001") && said.contains("deny"), "{said}");
    // A compressed body is not forwarded unread.
    let gzip = "content-encoding: gzip\r\n";
    let said = send(
        &mesh,
        "bot",
        &mcp,
        "",
        &post("/mcp", "application/json", gzip, DELETE),
    );
    assert!(said.starts_with("HTTP/1.1 415"), "{said}");
    recorded(&mesh, &mcp, "l7.content_encoding");
    // `/mcp/%2e%2e/admin` is `/admin` to the server: not the declared
    // endpoint; `%2F` spellings are refused outright.
    let read = DELETE.replace("delete", "read");
    let said = send(
        &mesh,
        "bot",
        &mcp,
        "",
        &post("/mcp/%2e%2e/admin", "application/json", "", &read),
    );
    assert!(said.contains("mcp.undeclared"), "{said}");
    let said = send(
        &mesh,
        "bot",
        &mcp,
        "",
        &post("/mcp%2F..%2Fadmin", "application/json", "", &read),
    );
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    // MCP headers do not make an LLM request MCP: its model is checked.
    let chat = r#"{"model":"gpt-big","messages":[{"role":"user","content":"hi"}]}"#;
    let claims_mcp = "mcp-protocol-version: 2025-06-18\r\n";
    let said = send(
        &mesh,
        "bot",
        &llm,
        "",
        &post("/v1/chat/completions", "application/json", claims_mcp, chat),
    );
    assert!(
        said.starts_with("HTTP/1.1 403") && said.contains("gpt-big"),
        "{said}"
    );

    assert_eq!(
        mcp.count() + llm.count(),
        0,
        "a steered call reached its server"
    );
}

#[test]
fn spend_the_mesh_cannot_count_is_refused_under_a_token_budget() {
    require_root();
    let llm = HttpServer::start("127.0.0.1");
    let policy = format!(
        "{}llm:\n  - {{ provider: openai, address: \"{}\", models: [\"*\"] }}\n\
         budgets:\n  - {{ name: t, limit: {{ tokens: 100000 }}, window: 1h, on_exhaust: halt }}\n",
        egress_policy("bot", &[llm.addr.to_string()]),
        llm.addr
    );
    let mesh = Mesh::start("escape-spend", &[("bot.yaml", &policy)]);
    for (path, body) in [
        (
            "/v1/responses",
            r#"{"model":"m","background":true,"input":"a novel"}"#,
        ),
        ("/v1/completions", r#"{"model":"m","prompt":"a novel"}"#),
        ("/v1/embeddings", r#"{"model":"m","input":"x"}"#),
    ] {
        let said = send(
            &mesh,
            "bot",
            &llm,
            "",
            &post(path, "application/json", "", body),
        );
        assert!(
            said.starts_with("HTTP/1.1 403") && said.contains("budgets[t]"),
            "{path}: {said}"
        );
    }
    recorded(&mesh, &llm, "budgets[t]");
    assert_eq!(llm.count(), 0, "an uncountable call reached the provider");
}

#[test]
fn a_name_the_policy_allows_does_not_carry_an_agent_to_another_address() {
    require_root();
    let server = HttpServer::start("127.0.0.1");
    let port = server.addr.port();
    // Allowed by name only; the name resolves to another address.
    let policy = egress_policy("bot", &[format!("api.example:{port}")]);
    let mut mesh = Mesh::new("escape-name", &[("bot.yaml", &policy)]);
    mesh.set_hosts(&[("api.example", "127.0.0.9")]);
    mesh.start_daemon();
    let get = format!("GET / HTTP/1.1\r\nhost: api.example:{port}\r\nconnection: close\r\n\r\n");
    let said = send(&mesh, "bot", &server, "", get.as_bytes());
    assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    assert!(said.contains("egress.name_unbound"), "{said}");
    let r = recorded(&mesh, &server, "egress.name_unbound");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("127.0.0.9")),
        "{r:#}"
    );
    assert_eq!(server.count(), 0, "a spoofed Host reached the server");
}
