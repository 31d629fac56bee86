//! Budgets end to end (ARCHITECTURE.md 5-7), root: a real daemon,
//! real cgroups, the official `openai` client against @copilotkit/aimock and
//! the MCP SDK client against the SDK's server, unmodified, inside governed
//! cgroups. An LLM call reserves its maximum before it is forwarded and
//! settles to the provider's usage; calls that do not fit get the provider's
//! 429; a stream is cut cleanly at its reservation; settled spend survives a
//! SIGKILL; a runaway MCP agent is stopped at its calls budget and
//! quarantined.
//!
//! The aimock `hello` fixture costs 11 input + 7 output = 18 tokens a call.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use mesh_tests::{
    command_in_cgroup, meshctl_bin,
    peers::{python_argv, run_as, spawn_aimock_with, spawn_server, PeerKind, PeerServer},
    run_in_cgroup, stderr, stdout, HttpServer, Mesh,
};
use serde_json::Value;

/// Tokens of one `hello` call (the fixture's usage).
const HELLO_TOKENS: u64 = 18;
/// USD of one `hello` call at the policy's gpt-4o-mini prices (per 1M tokens).
const HELLO_USD: f64 = (11.0 * 0.15 + 7.0 * 0.60) / 1e6;
/// The policy error code of section 6.
const REFUSED: i64 = -32001;

/// An LLM agent's policy: egress and an `llm` entry for the mock, prices, and
/// the given `budgets:` entries (YAML flow mappings, one per line).
fn llm_policy(agent: &str, mock: &PeerServer, budgets: &[&str]) -> String {
    let addr = mock.addr();
    let budgets: String = budgets.iter().map(|b| format!("  - {b}\n")).collect();
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {agent} }}\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [\"{addr}\"]\n\
         llm:\n  - {{ provider: openai, address: \"{addr}\", models: [\"*\"] }}\n\
         prices:\n  gpt-4o-mini: {{ input: 0.15, output: 0.60 }}\n\
         budgets:\n{budgets}"
    )
}

/// The last JSON line a peer printed.
fn last_json(out: &str) -> Value {
    let line = out.trim().lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `meshctl budget show --agent AGENT --output json`: the agent's budgets.
fn budgets_of(mesh: &Mesh, agent: &str) -> Vec<Value> {
    let out = mesh.meshctl(&["--output", "json", "budget", "show", "--agent", agent]);
    assert!(
        out.status.success(),
        "budget show: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let shown: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("budget show json ({e}): {}", stdout(&out)));
    let agents = shown["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("no agents in {shown:#}"));
    let entry = agents
        .iter()
        .find(|a| a["agent"] == agent)
        .unwrap_or_else(|| panic!("{agent} not in {shown:#}"));
    entry["budgets"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no budgets in {entry:#}"))
}

/// One budget of `budget show`, by name.
fn budget(mesh: &Mesh, agent: &str, name: &str) -> Value {
    let all = budgets_of(mesh, agent);
    all.iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {name} of {agent}: {all:#?}"))
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: not a whole number: {v}"))
}

fn as_f64(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"))
}

/// The value of the sample of metric `name` carrying every label in `labels`.
fn metric(mesh: &Mesh, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = mesh.metrics_text();
    let prefix = format!("{name}{{");
    text.lines()
        .find(|l| {
            l.starts_with(&prefix)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

/// Equal within `calls` nano-USD: the ledger counts nano-USD, and a price
/// times a token count may round by one nano-USD a call.
fn close_usd(a: f64, b: f64, calls: u64) -> bool {
    (a - b).abs() <= 1e-9 * (calls.max(1) as f64) + 1e-12
}

/// Chat completion records to the mock once `n` of them exist.
fn chat_records(mesh: &Mesh, mock: &PeerServer, n: usize) -> Vec<Value> {
    let is_chat = |r: &Value| r["call"]["method"] == "chat.completions";
    mesh.call_records(&mock.addr().to_string(), |rs| {
        rs.iter().filter(|r| is_chat(r)).count() >= n
    })
    .into_iter()
    .filter(is_chat)
    .collect()
}

/// A 429 as the openai client saw it (llm_burst.py's error entry): the
/// OpenAI error shape with mesh's budget refusal in it.
fn assert_budget_429(e: &Value, rule: &str) {
    assert_eq!(e["status"], 429, "{e:#}");
    assert_eq!(e["exception"], "RateLimitError", "{e:#}");
    assert_eq!(e["type"], "insufficient_quota", "{e:#}");
    assert_eq!(e["code"], "mesh_budget", "{e:#}");
    let error = &e["body"]["error"];
    assert!(error.is_object(), "no error object in the body: {e:#}");
    assert_eq!(error["type"], "insufficient_quota", "{e:#}");
    assert_eq!(error["code"], "mesh_budget", "{e:#}");
    assert!(
        error.get("param").is_some_and(Value::is_null),
        "param: null expected: {e:#}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(rule)),
        "the message names {rule}: {e:#}"
    );
    assert_eq!(error["mesh"]["rule"], rule, "{e:#}");
    assert!(error["mesh"]["reason"].is_string(), "{e:#}");
    assert!(error["mesh"]["audit_id"].is_number(), "{e:#}");
    if let Some(after) = e["retry_after"].as_str() {
        assert!(
            after.trim().parse::<u64>().is_ok(),
            "retry-after in seconds: {e:#}"
        );
    }
}

#[test]
fn a_burst_of_streamed_calls_settles_exactly_and_never_exceeds_the_limit() {
    // Below the 100 x 18 = 1800 tokens all calls would settle to, so not
    // all can fit; each call reserves about 155 (its ~140-byte body + 16),
    // so about ten fit at once, and more as earlier ones settle to 18.
    const LIMIT: u64 = 1700;
    const CALLS: usize = 100;
    let mock = spawn_server(PeerKind::Aimock, "127.0.0.4", 0);
    let agent = "spender";
    let mesh = Mesh::start(
        "budget-burst",
        &[(
            "spender.yaml",
            &llm_policy(
                agent,
                &mock,
                &[
                    &format!(
                        "{{ name: tokens, limit: {{ tokens: {LIMIT} }}, window: 1h, on_exhaust: halt }}"
                    ),
                    "{ name: spend, limit: { usd: 5 }, window: 1h, on_exhaust: halt }",
                ],
            ),
        )],
    );
    let before = budget(&mesh, agent, "tokens");
    assert_eq!(before["unit"], "tokens", "{before:#}");
    assert_eq!(before["limit"], LIMIT, "{before:#}");
    assert_eq!(before["used"], 0, "{before:#}");
    assert_eq!(before["reserved"], 0, "{before:#}");
    assert_eq!(before["remaining"], LIMIT, "{before:#}");
    assert_eq!(before["window_secs"], 3600, "{before:#}");
    assert_eq!(before["on_exhaust"], "halt", "{before:#}");

    let base = mock.openai_base_url();
    let calls = CALLS.to_string();
    let out = run_as(
        &mesh,
        agent,
        "llm_burst.py",
        &[
            "--base-url",
            &base,
            "--calls",
            &calls,
            "--stream",
            "1",
            "--max-tokens",
            "16",
        ],
    );
    let burst = last_json(&out);
    let ok = burst["ok"].as_array().expect("ok list");
    let errors = burst["errors"].as_array().expect("errors list");
    assert_eq!(ok.len() + errors.len(), CALLS, "{burst:#}");
    for success in ok {
        assert_eq!(success["text"], "Hi there", "{success:#}");
        assert_eq!(
            success["usage"]["total_tokens"], HELLO_TOKENS,
            "a success whose usage the client saw: {success:#}"
        );
    }
    for e in errors {
        assert_budget_429(e, "budgets[tokens]");
    }
    assert!(!ok.is_empty(), "no call fit: {burst:#}");
    assert!(
        !errors.is_empty(),
        "every call fit, {} tokens over {LIMIT}: {burst:#}",
        HELLO_TOKENS * CALLS as u64
    );
    let successes = ok.len() as u64;
    eprintln!(
        "{successes} of {CALLS} calls fit; first refusal: {:#}",
        errors[0]
    );

    // Nothing counted twice, nothing lost, nothing left reserved.
    let tokens = budget(&mesh, agent, "tokens");
    let used = as_u64(&tokens["used"], "used");
    assert_eq!(
        used,
        HELLO_TOKENS * successes,
        "{successes} successes: {tokens:#}"
    );
    assert!(used <= LIMIT, "{tokens:#}");
    assert_eq!(tokens["reserved"], 0, "{tokens:#}");
    assert_eq!(tokens["remaining"], LIMIT - used, "{tokens:#}");
    let spend = budget(&mesh, agent, "spend");
    assert_eq!(spend["unit"], "usd", "{spend:#}");
    let spent = as_f64(&spend["used"], "usd used");
    assert!(
        close_usd(spent, HELLO_USD * successes as f64, successes),
        "{successes} successes at {HELLO_USD} USD: {spend:#}"
    );
    assert!(
        close_usd(as_f64(&spend["reserved"], "usd reserved"), 0.0, 0),
        "{spend:#}"
    );

    // The records: each forwarded call reserved before and settled to 18;
    // each refusal names the budget.
    let records = chat_records(&mesh, &mock, CALLS);
    let forwarded: Vec<&Value> = records
        .iter()
        .filter(|r| r["verdict"] == "forwarded")
        .collect();
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["verdict"] == "refused_policy")
        .collect();
    assert_eq!(forwarded.len(), ok.len(), "{records:#?}");
    assert_eq!(refused.len(), errors.len(), "{records:#?}");
    for r in &forwarded {
        let b = &r["call"]["budget"];
        assert!(
            as_u64(&b["reserved"]["tokens"], "reserved tokens") > 16,
            "body length + max_tokens reserved: {r:#}"
        );
        assert_eq!(b["settled"]["tokens"], HELLO_TOKENS, "{r:#}");
        assert_eq!(b["cut"], false, "{r:#}");
    }
    for r in &refused {
        assert_eq!(r["rule"], "budgets[tokens]", "{r:#}");
        assert!(r["reason"].is_string(), "{r:#}");
    }

    // The metrics agree with `budget show`.
    let remaining = metric(
        &mesh,
        "mesh_budget_remaining",
        &[("agent", agent), ("budget", "tokens"), ("unit", "tokens")],
    );
    assert_eq!(remaining, (LIMIT - used) as f64);
    let cost = metric(&mesh, "mesh_cost_usd_total", &[("agent", agent)]);
    assert!(
        close_usd(cost, spent, successes),
        "cost {cost} vs used {spent}"
    );
}

#[test]
fn a_stream_is_cut_cleanly_at_its_reservation() {
    const STORY: &str = "tell me a long story";
    let mock = spawn_aimock_with("127.0.0.4", 0, &["aimock-long-fixture.json"]);
    let agent = "storyteller";
    let mesh = Mesh::start(
        "budget-cut",
        &[(
            "storyteller.yaml",
            &llm_policy(
                agent,
                &mock,
                &["{ name: tokens, limit: { tokens: 100000 }, window: 1h, on_exhaust: halt }"],
            ),
        )],
    );
    let base = mock.openai_base_url();
    let story = |max_tokens: &str| {
        last_json(&run_as(
            &mesh,
            agent,
            "llm_client.py",
            &[
                "--provider",
                "openai",
                "--base-url",
                &base,
                "--api",
                "chat",
                "--stream",
                "1",
                "--message",
                STORY,
                "--max-tokens",
                max_tokens,
            ],
        ))
    };
    // With room for it, the whole story comes through the mesh.
    let whole = story("4096");
    let full = whole["text"].as_str().expect("text").to_owned();
    assert!(full.len() > 2000, "the fixture's long story: {whole:#}");

    // 16 output tokens: aimock streams 20 characters an event (about 5
    // tokens), so a few events fit and the rest does not. The client's
    // iteration ends normally (llm_client.py exits 0 only then).
    let cut = story("16");
    let text = cut["text"].as_str().expect("text");
    assert!(text.len() < full.len(), "not cut: {cut:#}");
    assert!(full.starts_with(text), "a prefix of the story: {cut:#}");

    let records = chat_records(&mesh, &mock, 2);
    assert_eq!(records.len(), 2, "{records:#?}");
    let cut_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["call"]["budget"]["cut"] == true)
        .collect();
    assert_eq!(cut_records.len(), 1, "one cut call: {records:#?}");
    let r = cut_records[0];
    assert_eq!(r["verdict"], "forwarded", "{r:#}");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("reserv")),
        "the reason names the reservation: {r:#}"
    );
    eprintln!(
        "cut after {} of {} characters: {r:#}",
        text.len(),
        full.len()
    );
    let b = &r["call"]["budget"];
    let reserved = as_u64(&b["reserved"]["tokens"], "reserved tokens");
    let settled = as_u64(&b["settled"]["tokens"], "settled tokens");
    assert!(settled <= reserved, "settled within the reservation: {r:#}");
    let whole_record = records
        .iter()
        .find(|r| r["call"]["budget"]["cut"] == false)
        .unwrap_or_else(|| panic!("the uncut call: {records:#?}"));
    assert_eq!(whole_record["verdict"], "forwarded", "{whole_record:#}");

    let tokens = budget(&mesh, agent, "tokens");
    assert_eq!(tokens["reserved"], 0, "{tokens:#}");
    assert_eq!(
        tokens["used"],
        settled
            + as_u64(
                &whole_record["call"]["budget"]["settled"]["tokens"],
                "settled"
            ),
        "used is the sum of the settlements: {tokens:#}\n{records:#?}"
    );
}

/// Lines a child prints, as they come, on a channel.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// Kills a child we started (by pid, via `Child`) unless it was reaped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn settled_spend_survives_a_sigkill_under_load() {
    const WORKERS: u64 = 4;
    let mock = spawn_server(PeerKind::Aimock, "127.0.0.4", 0);
    let agent = "crashy";
    let mut mesh = Mesh::start(
        "budget-crash",
        &[(
            "crashy.yaml",
            &llm_policy(
                agent,
                &mock,
                &["{ name: tokens, limit: { tokens: 10000000 }, window: 1h, on_exhaust: halt }"],
            ),
        )],
    );
    let base = mock.openai_base_url();
    let workers = WORKERS.to_string();
    let argv = python_argv(
        "llm_loop.py",
        &[
            "--base-url",
            &base,
            "--workers",
            &workers,
            "--stream",
            "mixed",
            "--max-tokens",
            "16",
        ],
    );
    let mut client = std::process::Command::new(meshctl_bin());
    client
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args(["exec", "--agent", agent, "--"])
        .args(&argv)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = ChildGuard(client.spawn().expect("spawn llm_loop"));
    let lines = lines_of(&mut client.0);

    // Load for about two seconds, with calls seen completing.
    let mut completed = 0u64;
    let mut summary = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) || completed < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {completed} calls completed in a minute:\n{}",
            mesh.daemon_log()
        );
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => count_line(&line, &mut completed, &mut summary),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("llm_loop ended before the kill:\n{}", mesh.daemon_log())
            }
        }
    }
    mesh.kill_daemon();

    // Every worker's next call fails (the listener is gone; the kernel
    // refuses governed connects while the daemon is down) and the script
    // reports; only then does the daemon come back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while summary.is_none() {
        assert!(
            Instant::now() < deadline,
            "llm_loop did not end after the kill"
        );
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => count_line(&line, &mut completed, &mut summary),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let summary = summary.expect("llm_loop's summary line");
    assert_eq!(summary["completed"], completed, "{summary:#}");
    assert_eq!(
        summary["failures"].as_array().map(Vec::len),
        Some(WORKERS as usize),
        "every worker stopped on a failure: {summary:#}"
    );

    mesh.start_daemon();
    let tokens = budget(&mesh, agent, "tokens");
    let used = as_u64(&tokens["used"], "used");
    assert_eq!(used % HELLO_TOKENS, 0, "whole calls only: {tokens:#}");
    let settled_calls = used / HELLO_TOKENS;
    eprintln!("{completed} calls completed for the client, {settled_calls} settled");
    assert!(
        settled_calls >= completed,
        "{completed} calls completed for the client but {settled_calls} settled: lost spend ({tokens:#})"
    );
    assert!(
        settled_calls <= completed + WORKERS,
        "{completed} completed, at most {WORKERS} in flight, yet {settled_calls} settled: counted twice ({tokens:#})"
    );
    assert_eq!(
        tokens["reserved"], 0,
        "nothing in flight after a restart: {tokens:#}"
    );

    // A second crash and restart, without load: the same spend.
    mesh.kill_daemon();
    mesh.start_daemon();
    let again = budget(&mesh, agent, "tokens");
    assert_eq!(again["used"], used, "{again:#}");
    let _ = client.0.wait();
}

/// Counts llm_loop's lines: a completed call (checking the usage the client
/// saw), or the summary.
fn count_line(line: &str, completed: &mut u64, summary: &mut Option<Value>) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("llm_loop ({e}): {line}"));
    if v["done"] == true {
        *summary = Some(v);
    } else {
        assert_eq!(v["total_tokens"], HELLO_TOKENS, "{line}");
        *completed += 1;
    }
}

/// Lifts the quarantine of an agent when the test ends, however it ends.
struct ReleaseOnDrop<'a> {
    mesh: &'a Mesh,
    agent: &'a str,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.mesh.meshctl(&["release", self.agent]);
    }
}

#[test]
fn a_runaway_mcp_agent_is_stopped_at_its_calls_budget_and_quarantined() {
    const CALLS: u64 = 20;
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let other = HttpServer::start("127.0.0.2");
    let agent = "runaway";
    let policy = format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {agent} }}\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [\"{mcp}\", \"{other}\"]\n\
         mcp:\n  - server: calc\n    address: \"{mcp}\"\n    tools: {{ write: [\"add\"] }}\n    grant: [write]\n\
         budgets:\n  - {{ name: runaway, limit: {{ calls: {CALLS} }}, window: 1m, on_exhaust: quarantine }}\n",
        mcp = server.addr(),
        other = other.addr,
    );
    let mesh = Mesh::start("budget-runaway", &[("runaway.yaml", &policy)]);
    // A cgroup tagged by hand (not an exec cgroup, which goes when its
    // command ends): the agent stays governed, and its quarantine visible,
    // after the loop.
    let cgroup = mesh.make_cgroup("runaway");
    let tag = mesh.meshctl(&["tag", cgroup.to_str().expect("utf8"), "--agent", agent]);
    assert!(tag.status.success(), "tag: {}", stderr(&tag));
    let _release = ReleaseOnDrop { mesh: &mesh, agent };

    let url = server.url();
    let argv = python_argv("mcp_loop.py", &["--url", &url, "--max-calls", "200"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // Ends by itself: mcp_loop.py stops at the first failure (or 200 calls).
    let out = command_in_cgroup(&cgroup, &argv)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run mcp_loop");
    assert!(
        out.status.success(),
        "mcp_loop:\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        mesh.daemon_log()
    );
    let seen = last_json(&stdout(&out));
    assert_eq!(seen["succeeded"], CALLS, "{seen:#}");
    let failure = &seen["failure"];
    assert_eq!(failure["kind"], "jsonrpc", "refused, not cut off: {seen:#}");
    assert_eq!(failure["code"], REFUSED, "{seen:#}");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("budgets[runaway]")),
        "{seen:#}"
    );
    assert_eq!(failure["data"]["rule"], "budgets[runaway]", "{seen:#}");

    // Quarantined in the kernel, as `meshctl quarantine` does, once the
    // refusal is out (the quarantine would otherwise drop it): poll.
    let quarantined = |status: &serde_json::Value| {
        status["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == agent))
            .is_some_and(|entry| entry["quarantined"] == true)
    };
    let mut status = mesh.status();
    for _ in 0..100 {
        if quarantined(&status) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        status = mesh.status();
    }
    assert!(quarantined(&status), "{agent} not quarantined: {status:#}");
    let gauge = metric(&mesh, "mesh_quarantined", &[("agent", agent)]);
    assert_eq!(gauge, 1.0);
    let calls_budget = budget(&mesh, agent, "runaway");
    assert_eq!(calls_budget["unit"], "calls", "{calls_budget:#}");
    assert_eq!(calls_budget["used"], CALLS, "{calls_budget:#}");
    assert_eq!(calls_budget["remaining"], 0, "{calls_budget:#}");
    assert_eq!(calls_budget["on_exhaust"], "quarantine", "{calls_budget:#}");

    // Its next connects fail, from its cgroup and from a new one.
    let curl = ["curl", "-sS", "--max-time", "10", &other.url()];
    let served = other.count();
    let out = run_in_cgroup(&cgroup, &curl);
    assert!(
        !out.status.success(),
        "connect while quarantined: {}",
        stdout(&out)
    );
    let out = mesh.exec(agent, &curl);
    assert!(
        !out.status.success(),
        "connect while quarantined: {}",
        stdout(&out)
    );
    assert_eq!(other.count(), served, "a quarantined connect got through");

    // The records: the 21st call refused under the budget.
    let records = mesh.call_records(&server.addr().to_string(), |rs| {
        rs.iter().any(|r| r["rule"] == "budgets[runaway]")
    });
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["call"]["method"] == "tools/call" && r["call"]["direction"] == "client_to_server"
        })
        .collect();
    let forwarded = calls.iter().filter(|r| r["verdict"] == "forwarded").count();
    let refused: Vec<&&Value> = calls
        .iter()
        .filter(|r| r["verdict"] == "refused_policy")
        .collect();
    assert_eq!(forwarded as u64, CALLS, "{calls:#?}");
    assert_eq!(refused.len(), 1, "{calls:#?}");
    assert_eq!(refused[0]["rule"], "budgets[runaway]", "{:#}", refused[0]);

    // Released, the agent connects again.
    let out = mesh.meshctl(&["release", agent]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    let out = run_in_cgroup(&cgroup, &curl);
    assert!(out.status.success(), "after release: {}", stderr(&out));
}
