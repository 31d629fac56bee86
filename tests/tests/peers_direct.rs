//! The real peers talking to each other directly, without mesh: proves the
//! pinned installs (`cargo xtask setup`) and tests/peers/ work before the
//! end-to-end tests put mesh between them.
//!
//! UNPRIVILEGED: no root, no cgroups, no BPF; servers on 127.0.0.2-4
//! (loopback) with ports picked by the servers. Needs the peers installed
//! (`cargo xtask setup`; `cargo xtask test` does it).
use std::process::Output;

use mesh_tests::peers::{python_command, spawn_server, PeerKind};
use mesh_tests::{stderr, stdout};

fn run(script: &str, args: &[&str]) -> Output {
    python_command(script, args)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"))
}

/// The JSON lines a peer client printed; asserts it exited 0.
fn json_lines(what: &str, out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}")))
        .collect()
}

fn step<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {lines:?}"))
}

#[test]
fn mcp_client_basic_and_elicit_against_mcp_server() {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let url = server.url();
    for (mode, version) in [
        ("auto", "2026-07-28"),
        ("legacy", "2025-11-25"),
        ("2026-07-28", "2026-07-28"),
    ] {
        let out = run(
            "mcp_client.py",
            &["--url", &url, "--mode", mode, "--script", "basic"],
        );
        let lines = json_lines(&format!("mcp basic {mode}"), &out);
        assert_eq!(step(&lines, "connect")["protocol_version"], version);
        assert_eq!(
            step(&lines, "call_tool")["result"]["structuredContent"]["result"],
            5
        );
        assert_eq!(step(&lines, "done")["ok"], true);
    }
    // Elicitation: a server->client request in legacy mode, the
    // input_required round trip in 2026-07-28 mode.
    for mode in ["legacy", "2026-07-28"] {
        let out = run(
            "mcp_client.py",
            &["--url", &url, "--mode", mode, "--script", "elicit"],
        );
        let lines = json_lines(&format!("mcp elicit {mode}"), &out);
        assert_eq!(step(&lines, "elicitation")["answer"], "accept");
        assert_eq!(step(&lines, "done")["ok"], true);
    }
}

#[test]
fn mcp_client_over_sse_transport() {
    let server = spawn_server(PeerKind::McpSse, "127.0.0.2", 0);
    let out = run(
        "mcp_client.py",
        &[
            "--url",
            &server.url(),
            "--transport",
            "sse",
            "--mode",
            "legacy",
            "--script",
            "basic",
        ],
    );
    let lines = json_lines("mcp basic over sse", &out);
    assert_eq!(step(&lines, "done")["ok"], true);
}

#[test]
fn mcp_client_against_server_everything() {
    let server = spawn_server(PeerKind::Everything, "127.0.0.2", 0);
    let out = run(
        "mcp_client.py",
        &["--url", &server.url(), "--script", "everything"],
    );
    let lines = json_lines("mcp everything", &out);
    // server-everything answers server/discover with 400: auto falls back.
    assert_eq!(step(&lines, "connect")["protocol_version"], "2025-11-25");
    assert_eq!(step(&lines, "done")["ok"], true);
}

#[test]
fn a2a_client_send_and_stream() {
    let server = spawn_server(PeerKind::A2a, "127.0.0.3", 0);
    for protocol in ["1.0", "0.3"] {
        let out = run(
            "a2a_client.py",
            &[
                "--url",
                &server.url(),
                "--script",
                "send",
                "--protocol",
                protocol,
            ],
        );
        let lines = json_lines(&format!("a2a send {protocol}"), &out);
        let last = lines.last().expect("output");
        assert_eq!(last["ok"], true);
        assert_eq!(last["events"], 1);

        let out = run(
            "a2a_client.py",
            &[
                "--url",
                &server.url(),
                "--script",
                "stream",
                "--protocol",
                protocol,
            ],
        );
        let lines = json_lines(&format!("a2a stream {protocol}"), &out);
        let last = lines.last().expect("output");
        assert_eq!(last["ok"], true);
        assert!(last["events"].as_u64().unwrap_or(0) >= 2, "{last}");
    }
}

#[test]
fn llm_clients_against_aimock() {
    let server = spawn_server(PeerKind::Aimock, "127.0.0.4", 0);
    let openai = server.openai_base_url();
    let anthropic = server.anthropic_base_url();
    for (provider, base, api) in [
        ("openai", &openai, "chat"),
        ("openai", &openai, "responses"),
        ("anthropic", &anthropic, "messages"),
    ] {
        for stream in ["0", "1"] {
            let out = run(
                "llm_client.py",
                &[
                    "--provider",
                    provider,
                    "--base-url",
                    base,
                    "--api",
                    api,
                    "--stream",
                    stream,
                    "--message",
                    "hello",
                ],
            );
            let what = format!("llm {provider} {api} stream={stream}");
            let lines = json_lines(&what, &out);
            let reply = &lines[0];
            assert_eq!(reply["text"], "Hi there", "{what}");
            assert_eq!(reply["usage"]["input_tokens"], 11, "{what}");
            assert_eq!(reply["usage"]["output_tokens"], 7, "{what}");
            assert_eq!(reply["usage"]["total_tokens"], 18, "{what}");
        }
    }
    // The fixture's rate-limit entry: a 429, not retried (max_retries=0).
    let out = run(
        "llm_client.py",
        &[
            "--provider",
            "openai",
            "--base-url",
            &openai,
            "--api",
            "chat",
            "--message",
            "ratelimit",
        ],
    );
    assert!(!out.status.success());
    let reply: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("error line is JSON");
    assert_eq!(reply["status"], 429);
}
