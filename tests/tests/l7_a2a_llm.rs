//! A2A and LLM APIs through the mesh with the real peers, unmodified, inside
//! governed cgroups (root): the a2a-sdk client and server (v1.0 and v0.3,
//! send and stream), and the official `openai` and `anthropic` clients
//! against @copilotkit/aimock. Calls are parsed; LLM usage is extracted
//! exactly as the fixture says (11 input, 7 output), streaming or not.
use mesh_tests::{
    egress_policy,
    peers::{run_as, spawn_server, PeerKind, PeerServer},
    Mesh,
};
use serde_json::Value;

fn calls(mesh: &Mesh, server: &PeerServer, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    mesh.call_records(&server.addr().to_string(), until)
}

fn with_method<'a>(calls: &'a [Value], method: &str) -> Vec<&'a Value> {
    calls
        .iter()
        .filter(|r| r["call"]["method"] == method)
        .collect()
}

fn a2a(protocol: &str, send: &str, stream: &str) {
    let server = spawn_server(PeerKind::A2a, "127.0.0.3", 0);
    let agent = format!("a2a-{}", protocol.replace('.', ""));
    let mesh = Mesh::start(
        &agent,
        &[(
            "p.yaml",
            &egress_policy(&agent, &[server.addr().to_string()]),
        )],
    );
    let url = server.url();
    let out = run_as(
        &mesh,
        &agent,
        "a2a_client.py",
        &["--url", &url, "--script", "send", "--protocol", protocol],
    );
    assert!(out.contains("hello"), "{out}");
    let out = run_as(
        &mesh,
        &agent,
        "a2a_client.py",
        &["--url", &url, "--script", "stream", "--protocol", protocol],
    );
    assert!(!out.is_empty());
    let calls = calls(&mesh, &server, |c| {
        !with_method(c, send).is_empty() && !with_method(c, stream).is_empty()
    });
    for method in [send, stream] {
        let found = with_method(&calls, method);
        assert_eq!(found.len(), 1, "{method}: {calls:#?}");
        let r = found[0];
        assert_eq!(r["protocol"], "a2a", "{r:#?}");
        assert_eq!(r["verdict"], "forwarded", "{r:#?}");
        assert_eq!(r["call"]["version"], protocol, "{r:#?}");
        assert_eq!(r["call"]["outcome"], "result", "{r:#?}");
        assert!(r["call"]["arguments"]["message"].is_object(), "{r:#?}");
    }
    // Discovery is on record too.
    assert!(!with_method(&calls, "agent/card").is_empty(), "{calls:#?}");
}

#[test]
fn a2a_v1_send_and_stream_are_parsed() {
    a2a("1.0", "SendMessage", "SendStreamingMessage");
}

#[test]
fn a2a_v03_send_and_stream_are_parsed() {
    a2a("0.3", "message/send", "message/stream");
}

#[test]
fn openai_and_anthropic_usage_is_extracted_streaming_or_not() {
    let server = spawn_server(PeerKind::Aimock, "127.0.0.4", 0);
    let mesh = Mesh::start(
        "llm",
        &[(
            "p.yaml",
            &egress_policy("llm", &[server.addr().to_string()]),
        )],
    );
    let cases = [
        (
            "openai",
            server.openai_base_url(),
            "chat",
            "chat.completions",
        ),
        ("openai", server.openai_base_url(), "responses", "responses"),
        (
            "anthropic",
            server.anthropic_base_url(),
            "messages",
            "messages",
        ),
    ];
    for (provider, base, api, method) in &cases {
        for stream in ["0", "1"] {
            let out = run_as(
                &mesh,
                "llm",
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
            let seen: Value =
                serde_json::from_str(out.trim().lines().last().unwrap_or("")).expect("client json");
            assert_eq!(seen["text"], "Hi there", "{out}");
            assert_eq!(seen["usage"]["input_tokens"], 11, "{out}");
            assert_eq!(seen["usage"]["output_tokens"], 7, "{out}");
            let want = *method;
            let records = calls(&mesh, &server, |c| {
                c.iter().filter(|r| r["call"]["method"] == want).count()
                    >= if stream == "0" { 1 } else { 2 }
            });
            let r = with_method(&records, method)
                .into_iter()
                .last()
                .unwrap_or_else(|| panic!("no {method} record: {records:#?}"));
            assert_eq!(r["protocol"], "llm", "{r:#?}");
            assert_eq!(r["call"]["provider"], *provider, "{r:#?}");
            assert!(r["call"]["name"].is_string(), "the model: {r:#?}");
            let usage = &r["call"]["usage"];
            assert_eq!(
                usage["input_tokens"], 11,
                "{provider} {api} stream={stream}: {r:#?}"
            );
            assert_eq!(
                usage["output_tokens"], 7,
                "{provider} {api} stream={stream}: {r:#?}"
            );
            assert_eq!(usage["estimated"], false, "{r:#?}");
            assert_eq!(r["call"]["outcome"], "result", "{r:#?}");
        }
    }
    let metrics = mesh.metrics_text();
    for (provider, kind, n) in [
        ("openai", "input", 44),
        ("openai", "output", 28),
        ("anthropic", "input", 22),
        ("anthropic", "output", 14),
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("mesh_llm_tokens_total{")
                    && l.contains("agent=\"llm\"")
                    && l.contains(&format!("provider=\"{provider}\""))
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .unwrap_or_else(|| panic!("no {provider} {kind} tokens:\n{metrics}"));
        let total: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        assert_eq!(total, n, "{line}");
    }
}
