//! Hot reload (ARCHITECTURE.md 5.2), end to end: a running daemon picks up
//! policy changes without a restart, rejects an invalid directory whole, and
//! never decides a request from half of one policy and half of another while
//! reloads run under load. Root, real kernel, real cgroups.
use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use mesh_tests::*;

/// `curl` from a governed process: `(HTTP status, body)`; a transport
/// failure panics with curl's message.
fn governed_curl(mesh: &Mesh, agent: &str, url: &str) -> (u16, String) {
    let out = mesh.exec(
        agent,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            url,
        ],
    );
    assert!(
        out.status.success(),
        "curl {url} as {agent} failed: {}\n{}",
        stderr(&out),
        mesh.daemon_log()
    );
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("http code"), body.to_owned())
}

fn generation(mesh: &Mesh) -> u64 {
    mesh.status()["policy_generation"]
        .as_u64()
        .expect("policy_generation in status")
}

/// Waits (bounded, 10 s) until the daemon's policy generation exceeds `than`.
fn wait_generation_above(mesh: &Mesh, than: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = generation(mesh);
        if g > than {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "policy generation stayed at {g}:\n{}",
            mesh.daemon_log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces `dir/name` in one step (write aside, rename over), so that the
/// watcher never sees a half-written file.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text).expect("write policy");
    std::fs::rename(&aside, dir.join(name)).expect("rename policy");
}

#[test]
fn an_invalid_policy_is_rejected_whole_and_the_old_one_stays_in_force() {
    let server = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start(
        "reload-invalid",
        &[(
            "web.yaml",
            &egress_policy("web", &[server.addr.to_string()]),
        )],
    );
    assert_eq!(generation(&mesh), 1);
    let (code, body) = governed_curl(&mesh, "web", &server.url());
    assert_eq!((code, body.as_str()), (200, server.body.as_str()));

    // A second, broken file (unknown key at line 4, column 1), and an edit
    // to the good one that would otherwise be valid: neither goes in force.
    std::fs::write(
        mesh.policy_dir.join("broken.yaml"),
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: other\nbogus: 1\n",
    )
    .expect("write");
    write_atomically(&mesh.policy_dir, "web.yaml", &egress_policy("web", &[]));

    // The watcher sees it and says why (bounded wait for its log line).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mesh.daemon_log().contains("broken.yaml:4:1:") {
        assert!(
            Instant::now() < deadline,
            "the watcher did not report the error:\n{}",
            mesh.daemon_log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let out = mesh.meshctl(&["policy", "reload"]);
    assert_eq!(out.status.code(), Some(1), "reload: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("broken.yaml:4:1: unknown field `bogus`")),
        "{err}"
    );
    let json_out = mesh.meshctl(&["--output", "json", "policy", "reload"]);
    assert_eq!(json_out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("reload json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["generation"], 1);
    assert_eq!(v["errors"][0]["line"], 4);
    assert_eq!(v["errors"][0]["column"], 1);

    // The policy in force is still the first one.
    assert_eq!(generation(&mesh), 1);
    let (code, body) = governed_curl(&mesh, "web", &server.url());
    assert_eq!(
        (code, body.as_str()),
        (200, server.body.as_str()),
        "the old policy must stay in force"
    );

    // Fixing the directory puts the pending edit in force.
    std::fs::remove_file(mesh.policy_dir.join("broken.yaml")).expect("rm");
    let out = mesh.meshctl(&["policy", "reload"]);
    assert!(out.status.success(), "reload: {}", stderr(&out));
    assert!(stdout(&out).contains("generation 2"), "{}", stdout(&out));
    let (code, _) = governed_curl(&mesh, "web", &server.url());
    assert_eq!(code, 403, "the fixed policy allows nothing");
}

#[test]
fn a_valid_change_takes_effect_without_a_restart_configmap_style() {
    let first = HttpServer::start("127.0.0.2");
    let second = HttpServer::start("127.0.0.2");
    let mut mesh = Mesh::new("reload-valid", &[]);
    // The layout of a Kubernetes ConfigMap volume: the file is a symlink
    // through `..data`, which an update flips to a new directory.
    let dir = mesh.policy_dir.clone();
    let version = |name: &str, allow: &[String]| {
        std::fs::create_dir(dir.join(name)).expect("version dir");
        std::fs::write(dir.join(name).join("web.yaml"), egress_policy("web", allow))
            .expect("policy");
    };
    version("..v1", &[first.addr.to_string()]);
    std::os::unix::fs::symlink("..v1", dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/web.yaml", dir.join("web.yaml")).expect("web.yaml");
    mesh.start_daemon();

    let status = mesh.status();
    assert_eq!(status["policy_generation"], 1);
    let loaded_first = status["policy_loaded_unix_ms"].as_u64().expect("loaded");
    assert_eq!(governed_curl(&mesh, "web", &first.url()).0, 200);
    let (code, body) = governed_curl(&mesh, "web", &second.url());
    assert_eq!(code, 403, "{body}");
    let served = second.count();

    version("..v2", &[first.addr.to_string(), second.addr.to_string()]);
    std::os::unix::fs::symlink("..v2", mesh.policy_dir.join("..data_tmp")).expect("tmp link");
    std::fs::rename(
        mesh.policy_dir.join("..data_tmp"),
        mesh.policy_dir.join("..data"),
    )
    .expect("flip ..data");

    assert_eq!(wait_generation_above(&mesh, 1), 2);
    let status = mesh.status();
    assert!(
        status["policy_loaded_unix_ms"].as_u64().expect("loaded") >= loaded_first,
        "{status:#}"
    );
    let (code, body) = governed_curl(&mesh, "web", &second.url());
    assert_eq!(
        (code, body.as_str()),
        (200, second.body.as_str()),
        "allowed after the reload"
    );
    assert_eq!(second.count(), served + 1);
    // explain asks the daemon, against the policy in force.
    let out = mesh.meshctl(&[
        "--output",
        "json",
        "policy",
        "explain",
        "--agent",
        "web",
        "--server",
        &second.addr.to_string(),
        "--tool",
        "anything",
        "--args",
        r#"{"n": 1}"#,
    ]);
    // Exit 0: allowed (the new policy allows the second server by egress,
    // and `web` has no mcp section).
    assert!(out.status.success(), "explain: {}", stderr(&out));
    let explanation: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(explanation["decision"], "allow", "{explanation:#}");
    assert!(
        explanation["rule"]
            .as_str()
            .is_some_and(|r| r.starts_with("egress.allow[")),
        "{explanation:#}"
    );
    let out = mesh.meshctl(&[
        "policy", "explain", "--agent", "web", "--server", "s", "--tool", "t", "--args", "{n: 1}",
    ]);
    assert_eq!(out.status.code(), Some(2), "bad --args is a usage error");
    assert!(
        stderr(&out).contains("key must be a string"),
        "{}",
        stderr(&out)
    );
    let human = stdout(&mesh.meshctl(&["status"]));
    assert!(human.contains("policy: generation 2, loaded "), "{human}");
    assert!(mesh.daemon_log().contains("policy reloaded"));
}

/// Python client: THREADS threads, each making requests on fresh connections,
/// alternating between the two servers, until the stop file appears (or
/// MAX_PER_THREAD requests). One JSON line per request, written to the
/// results file at the end (a pipe would fill up and stall the clients).
const LOAD_CLIENT: &str = r#"
import http.client, json, os, sys, threading, time
x_port, y_port, stop, ready, results = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
THREADS, MAX_PER_THREAD = 50, 70
out, lock = [], threading.Lock()
def client(i):
    for n in range(MAX_PER_THREAD):
        if os.path.exists(stop):
            return
        port = x_port if (i + n) % 2 == 0 else y_port
        rec = {"port": port}
        try:
            c = http.client.HTTPConnection("127.0.0.2", port, timeout=20)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            rec["status"] = r.status
            if r.status == 200:
                rec["body"] = body
            else:
                try:
                    rec["rule"] = json.loads(body)["error"]["rule"]
                except Exception:
                    rec["body"] = body
            c.close()
        except Exception as e:
            rec["error"] = repr(e)
        with lock:
            out.append(rec)
        time.sleep(0.12)
threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
open(ready, "w").close()
for t in threads:
    t.join()
with open(results, "w") as f:
    for rec in out:
        f.write(json.dumps(rec) + "\n")
"#;

/// `egress.allow[0]` matches `egress.allow[0]` and `egress.allow[0] "…" in file`
/// (the rule may carry the entry and file after the name).
fn rule_is(rule: &str, name: &str) -> bool {
    rule == name || rule.starts_with(&format!("{name} "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Policy {
    A,
    B,
}

#[test]
fn reloads_under_load_never_tear_a_decision() {
    let x = HttpServer::start("127.0.0.2");
    let y = HttpServer::start("127.0.0.2");
    let (xs, ys) = (x.addr.to_string(), y.addr.to_string());
    // A allows X and denies Y; B the reverse. In B both entries sit at
    // index 1 (index 0 is a never-used address), so a decision's rule names
    // the policy it came from, and a request decided by a torn mix (A's
    // allow list with B's deny list, say) would fall to `egress.default`,
    // which neither whole policy ever reaches for X or Y.
    let policy = |allow: &[&str], deny: &[&str]| {
        let list = |v: &[&str]| {
            v.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: load\n\
             egress:\n  default: deny\n  allow: [{}]\n  deny: [{}]\n",
            list(allow),
            list(deny)
        )
    };
    let policy_a = policy(&[&xs], &[&ys]);
    let policy_b = policy(&["127.0.0.9:9", &ys], &["127.0.0.9:9", &xs]);
    let mesh = Mesh::start("reload-load", &[("load.yaml", &policy_a)]);

    let stop = mesh.dir.join("stop");
    let ready = mesh.dir.join("ready");
    let results_file = mesh.dir.join("results.jsonl");
    let mut clients = Command::new(meshctl_bin())
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args([
            "exec",
            "--agent",
            "load",
            "--",
            "python3",
            "-c",
            LOAD_CLIENT,
        ])
        .arg(x.addr.port().to_string())
        .arg(y.addr.port().to_string())
        .arg(&stop)
        .arg(&ready)
        .arg(&results_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load clients");
    // Stops the clients even if an assert below fails.
    struct StopFile<'a>(&'a Path);
    impl Drop for StopFile<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, "");
        }
    }
    let stop_guard = StopFile(&stop);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "load clients did not start");
        thread::sleep(Duration::from_millis(20));
    }

    // 20 reloads alternating B, A, B, …: two through the watcher alone, then
    // two through `meshctl policy reload` right after the write, and so on.
    let mut last = generation(&mesh);
    for i in 0..20 {
        let text = if i % 2 == 0 { &policy_b } else { &policy_a };
        write_atomically(&mesh.policy_dir, "load.yaml", text);
        if i % 4 < 2 {
            last = wait_generation_above(&mesh, last);
        } else {
            let out = mesh.meshctl(&["--output", "json", "policy", "reload"]);
            assert!(out.status.success(), "reload {i}: {}", stderr(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(v["ok"], true);
            let g = v["generation"].as_u64().expect("generation");
            assert!(g > last, "generation went from {last} to {g}");
            last = g;
        }
        // Let requests run under each policy.
        thread::sleep(Duration::from_millis(150));
    }
    drop(stop_guard);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = clients.try_wait().expect("wait clients") {
            break status;
        }
        assert!(Instant::now() < deadline, "load clients did not stop");
        thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    clients
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(status.success(), "load clients: {status}: {err}");
    let out = std::fs::read_to_string(&results_file).expect("client results");

    // What each client saw: a whole A or a whole B, nothing else.
    let mut seen = std::collections::HashMap::new();
    let mut bad = Vec::new();
    let results: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("client line"))
        .collect();
    for r in &results {
        let to_x = r["port"] == x.addr.port();
        let rule = r["rule"].as_str().unwrap_or("");
        let verdict = match (to_x, r["status"].as_u64()) {
            (true, Some(200)) if r["body"] == x.body.as_str() => Some(Policy::A),
            (false, Some(200)) if r["body"] == y.body.as_str() => Some(Policy::B),
            (true, Some(403)) if rule_is(rule, "egress.deny[1]") => Some(Policy::B),
            (false, Some(403)) if rule_is(rule, "egress.deny[0]") => Some(Policy::A),
            _ => None,
        };
        match verdict {
            Some(p) => *seen.entry((to_x, p)).or_insert(0usize) += 1,
            None => bad.push(r.clone()),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} requests were neither A nor B: {:#?}",
        bad.len(),
        results.len(),
        &bad[..bad.len().min(20)]
    );
    eprintln!(
        "{} requests under 20 reloads: (to X?, policy) -> count {seen:?}",
        results.len()
    );
    // The reloads happened under load: both policies decided requests to
    // both servers.
    for key in [
        (true, Policy::A),
        (true, Policy::B),
        (false, Policy::A),
        (false, Policy::B),
    ] {
        assert!(
            seen.contains_key(&key),
            "no request saw {key:?}: {seen:?} ({} requests)",
            results.len()
        );
    }

    // What the daemon recorded: one record per request, each decided by a
    // rule of one whole policy.
    let total = results.len();
    let is_ours = |r: &serde_json::Value| {
        r["original_destination"] == xs.as_str() || r["original_destination"] == ys.as_str()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records: Vec<serde_json::Value> =
            mesh.records().into_iter().filter(|r| is_ours(r)).collect();
        if records.len() >= total || Instant::now() > deadline {
            break records;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), total, "one record per request");
    let torn: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            let to_x = r["original_destination"] == xs.as_str();
            let rule = r["rule"].as_str().unwrap_or("");
            let ok = match r["verdict"].as_str() {
                Some("forwarded") if to_x => rule_is(rule, "egress.allow[0]"),
                Some("forwarded") => rule_is(rule, "egress.allow[1]"),
                Some("refused_policy") if to_x => rule_is(rule, "egress.deny[1]"),
                Some("refused_policy") => rule_is(rule, "egress.deny[0]"),
                _ => false,
            };
            !ok
        })
        .collect();
    assert!(
        torn.is_empty(),
        "records not decided by one whole policy: {:#?}",
        &torn[..torn.len().min(20)]
    );
    assert!(
        !mesh.daemon_log().contains("policy reload rejected"),
        "{}",
        mesh.daemon_log()
    );
}
