//! The foundation, end to end: unmodified programs in governed cgroups are
//! carried through mesh-agent by eBPF. Root, real kernel, real cgroups.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
    time::{Duration, Instant},
};

use mesh_tests::*;

fn records_for<'a>(records: &'a [serde_json::Value], dst: &str) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|r| r["original_destination"] == dst)
        .collect()
}

#[test]
fn curl_and_python_are_carried_through_the_mesh_and_recorded() {
    let server = HttpServer::start("127.0.0.2");
    let dst = server.addr.to_string();
    let mesh = Mesh::start(
        "carry",
        &[(
            "web.yaml",
            &egress_policy("web", std::slice::from_ref(&dst)),
        )],
    );

    // curl: `exec` keeps the shell's pid, so the printed pid is curl's.
    let out = mesh.exec(
        "web",
        &[
            "sh",
            "-c",
            &format!("echo $$; exec curl -sS --max-time 20 {}", server.url()),
        ],
    );
    assert!(
        out.status.success(),
        "curl via mesh failed: {}\n{}",
        stderr(&out),
        mesh.daemon_log()
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    let curl_pid: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid line");
    assert!(text.contains(&server.body), "unexpected body: {text}");

    // Python urllib, unmodified.
    let script = format!(
        "import os, urllib.request\nprint(os.getpid())\nprint(urllib.request.urlopen('{}', timeout=20).read().decode())",
        server.url()
    );
    let out = mesh.exec("web", &["python3", "-c", &script]);
    assert!(
        out.status.success(),
        "python via mesh failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    let py_pid: u64 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid line");
    assert!(text.contains(&server.body));

    let records = mesh.records_once(&dst, 2);
    let mine = records_for(&records, &dst);
    assert_eq!(mine.len(), 2, "one record per request: {records:#?}");
    for (rec, pid) in mine.iter().zip([curl_pid, py_pid]) {
        assert_eq!(rec["agent"], "web");
        assert_eq!(rec["pid"].as_u64(), Some(pid), "{rec:#?}");
        assert_eq!(rec["verdict"], "forwarded");
        assert!(
            rec["bytes_to_client"].as_u64().unwrap_or(0) >= server.body.len() as u64,
            "{rec:#?}"
        );
        assert_ne!(rec["cgroup_id"].as_u64(), Some(0));
    }

    // Outside a governed cgroup the same client connects directly: no record.
    let before = mesh.records().len();
    let served_before = server.count();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", &server.url()])
        .output()
        .expect("curl");
    assert!(out.status.success());
    assert_eq!(server.count(), served_before + 1);
    assert_eq!(
        mesh.records().len(),
        before,
        "an ungoverned connection must not be recorded"
    );

    // The kernel counted the redirects, and /metrics exports them.
    let metrics = mesh.metrics_text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("mesh_cgroup_connects_total{")
                && l.contains("agent=\"web\"")
                && l.contains("redirected")
        })
        .unwrap_or_else(|| panic!("no redirected series:\n{metrics}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n >= 2.0, "{line}");
    assert!(
        metrics
            .contains("mesh_requests_total{agent=\"web\",protocol=\"http\",decision=\"allow\"} 2"),
        "{metrics}"
    );
}

#[test]
fn ipv6_and_ipv4_mapped_destinations_are_governed() {
    let v6 = HttpServer::start("::1");
    let v4 = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start(
        "ipv6",
        &[(
            "six.yaml",
            &egress_policy(
                "six",
                &[format!("[::1]:{}", v6.addr.port()), v4.addr.to_string()],
            ),
        )],
    );
    let out = mesh.exec("six", &["curl", "-sS", "-g", "--max-time", "20", &v6.url()]);
    assert!(out.status.success(), "v6 curl: {}", stderr(&out));
    assert!(stdout(&out).contains(&v6.body));

    // An AF_INET6 socket connecting to ::ffff:127.0.0.2.
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\ns.settimeout(20)\n\
         s.connect(('::ffff:127.0.0.2', {port}))\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         data = b''\nwhile True:\n    c = s.recv(4096)\n    if not c: break\n    data += c\nprint(data.decode())",
        port = v4.addr.port()
    );
    let out = mesh.exec("six", &["python3", "-c", &script]);
    assert!(out.status.success(), "mapped: {}", stderr(&out));
    assert!(stdout(&out).contains(&v4.body));

    mesh.records_once(&v4.addr.to_string(), 1);
    let records = mesh.records_once(&format!("[::1]:{}", v6.addr.port()), 1);
    let r6 = records_for(&records, &format!("[::1]:{}", v6.addr.port()));
    assert_eq!(r6.len(), 1, "{records:#?}");
    assert_eq!(r6[0]["agent"], "six");
    let r4 = records_for(&records, &v4.addr.to_string());
    assert_eq!(
        r4.len(),
        1,
        "mapped destination recorded as IPv4: {records:#?}"
    );
    assert_eq!(r4[0]["verdict"], "forwarded");
}

#[test]
fn child_cgroups_of_a_governed_cgroup_are_governed() {
    let server = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start(
        "child",
        &[(
            "kid.yaml",
            &egress_policy("kid", &[server.addr.to_string()]),
        )],
    );
    let parent = mesh.make_cgroup("manual");
    let out = mesh.meshctl(&["tag", parent.to_str().expect("utf8"), "--agent", "kid"]);
    assert!(out.status.success(), "tag: {}", stderr(&out));
    // Created after tagging.
    let child = mesh.make_cgroup("manual/child/grandchild");
    let out = run_in_cgroup(&child, &["curl", "-sS", "--max-time", "20", &server.url()]);
    assert!(out.status.success(), "curl in child: {}", stderr(&out));
    let records = mesh.records_once(&server.addr.to_string(), 1);
    let mine = records_for(&records, &server.addr.to_string());
    assert_eq!(mine.len(), 1, "{records:#?}");
    assert_eq!(mine[0]["agent"], "kid");
    let child_id = std::fs::metadata(&child)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("ino");
    assert_eq!(mine[0]["cgroup_id"].as_u64(), Some(child_id));
}

#[test]
fn quarantine_refuses_connects_and_stops_established_traffic_until_release() {
    let echo = EchoServer::start("127.0.0.2");
    let server = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start(
        "quarantine",
        &[(
            "q.yaml",
            &egress_policy("q", &[echo.addr.to_string(), server.addr.to_string()]),
        )],
    );
    // A long-lived governed client, stepped through stdin.
    let script = format!(
        r#"
import socket, sys
s = socket.create_connection(('127.0.0.2', {port}), timeout=20)
s.sendall(b'a'); assert s.recv(1) == b'a'
print('established', flush=True)
sys.stdin.readline()
s.sendall(b'b')
s.settimeout(2)
try:
    got = s.recv(1)
    print('leaked' if got else 'closed', flush=True)
except socket.timeout:
    print('blocked', flush=True)
sys.stdin.readline()
s.settimeout(60)
print('restored' if s.recv(1) == b'b' else 'lost', flush=True)
"#,
        port = echo.addr.port()
    );
    let mut client = std::process::Command::new(meshctl_bin())
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args(["exec", "--agent", "q", "--", "python3", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "established");

    let out = mesh.meshctl(&["quarantine", "q"]);
    assert!(out.status.success(), "quarantine: {}", stderr(&out));
    assert_eq!(mesh.status()["agents"][0]["quarantined"], true);
    writeln!(stdin, "go").expect("step");
    assert_eq!(
        next(),
        "blocked",
        "traffic must stop on an established connection"
    );

    // New connects are refused in the kernel (EPERM), also for new cgroups of the agent.
    let served = server.count();
    let out = mesh.exec("q", &["curl", "-sS", "--max-time", "10", &server.url()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("not permitted") || out.status.code() == Some(7),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        server.count(),
        served,
        "a quarantined connect reached the server"
    );
    let refused = mesh
        .records_until(|r| r["verdict"] == "refused_kernel" && r["agent"] == "q")
        .into_iter()
        .filter(|r| r["verdict"] == "refused_kernel" && r["agent"] == "q")
        .count();
    assert!(refused >= 1, "kernel refusal recorded");

    let out = mesh.meshctl(&["release", "q"]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    writeln!(stdin, "go").expect("step");
    assert_eq!(
        next(),
        "restored",
        "the established connection resumes after release"
    );
    let out = mesh.exec("q", &["curl", "-sS", "--max-time", "20", &server.url()]);
    assert!(out.status.success(), "after release: {}", stderr(&out));
    assert!(client.wait().expect("wait").success());
}

#[test]
fn killed_daemon_fails_closed_and_a_restart_restores_tags_and_quarantine() {
    let server = HttpServer::start("127.0.0.2");
    let allow = [server.addr.to_string()];
    let mut mesh = Mesh::start(
        "restart",
        &[
            ("k.yaml", &egress_policy("k", &allow)),
            ("kq.yaml", &egress_policy("kq", &allow)),
        ],
    );
    let cg = mesh.make_cgroup("k");
    let qcg = mesh.make_cgroup("kq");
    assert!(mesh
        .meshctl(&["tag", cg.to_str().expect("utf8"), "--agent", "k"])
        .status
        .success());
    assert!(mesh
        .meshctl(&["tag", qcg.to_str().expect("utf8"), "--agent", "kq"])
        .status
        .success());
    assert!(mesh.meshctl(&["quarantine", "kq"]).status.success());
    let curl = ["curl", "-sS", "--max-time", "10", &server.url()];
    assert!(run_in_cgroup(&cg, &curl).status.success());

    mesh.kill_daemon();
    let served = server.count();
    let out = run_in_cgroup(&cg, &curl);
    assert!(
        !out.status.success(),
        "governed connect must fail while the daemon is down"
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "connection refused expected: {}",
        stderr(&out)
    );
    assert_eq!(
        server.count(),
        served,
        "a governed connect went around the mesh"
    );

    mesh.start_daemon();
    let status = mesh.status();
    let agents = status["agents"].as_array().expect("agents");
    let k = agents
        .iter()
        .find(|a| a["name"] == "k")
        .expect("k survived restart");
    let kq = agents
        .iter()
        .find(|a| a["name"] == "kq")
        .expect("kq survived restart");
    assert_eq!(k["quarantined"], false);
    assert_eq!(kq["quarantined"], true);
    assert!(
        run_in_cgroup(&cg, &curl).status.success(),
        "traffic flows again"
    );
    let out = run_in_cgroup(&qcg, &curl);
    assert!(
        !out.status.success(),
        "quarantine still in force after restart"
    );
    assert!(mesh.meshctl(&["release", "kq"]).status.success());
    assert!(run_in_cgroup(&qcg, &curl).status.success());
}

#[test]
fn direct_connections_to_the_listener_are_closed_not_looped() {
    let mesh = Mesh::start(
        "loop",
        &[(
            "l.yaml",
            &egress_policy("l", &["127.0.0.0/8:*".to_string()]),
        )],
    );
    let listener = format!("http://127.0.0.1:{}/", mesh.listen_port);
    let out = mesh.exec("l", &["curl", "-sS", "--max-time", "10", &listener]);
    assert!(!out.status.success());
    let records = mesh.records_until(|r| r["verdict"] == "no_original_destination");
    assert!(
        records
            .iter()
            .any(|r| r["verdict"] == "no_original_destination"),
        "{records:#?}"
    );
    // Still serving.
    let server = HttpServer::start("127.0.0.2");
    let out = mesh.exec("l", &["curl", "-sS", "--max-time", "20", &server.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_agent_without_policy_is_refused_with_a_record() {
    let server = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start("nopolicy", &[]);
    let started = Instant::now();
    let out = mesh.exec(
        "stranger",
        &["curl", "-sS", "--max-time", "30", &server.url()],
    );
    // HTTP gets a 403 naming the rule (contract section 6), at once.
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no-policy"), "{}", stdout(&out));
    let _ = started;
    assert_eq!(server.count(), 0);
    let records = mesh.records_once(&server.addr.to_string(), 1);
    let r = records_for(&records, &server.addr.to_string());
    assert_eq!(r.len(), 1, "{records:#?}");
    assert_eq!(r[0]["verdict"], "refused_policy");
    assert!(
        r[0]["reason"].as_str().unwrap_or("").contains("no policy"),
        "{:#?}",
        r[0]
    );
}

#[test]
fn two_hundred_concurrent_connections_carry_a_mebibyte_each_way_intact() {
    let echo = EchoServer::start("127.0.0.2");
    let mesh = Mesh::start(
        "bulk",
        &[(
            "bulk.yaml",
            &egress_policy("bulk", &[echo.addr.to_string()]),
        )],
    );
    let script = format!(
        r#"
import asyncio, hashlib, os
N, SIZE = 200, 1 << 20
async def one(i):
    r, w = await asyncio.open_connection('127.0.0.2', {port})
    data = os.urandom(SIZE)
    async def send():
        w.write(data)
        await w.drain()
        w.write_eof()
    sender = asyncio.create_task(send())
    got = await r.readexactly(SIZE)
    await sender
    w.close()
    return hashlib.sha256(data).digest() == hashlib.sha256(got).digest()
async def main():
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(N))), 600)
    print('intact', sum(results), 'of', N)
asyncio.run(main())
"#,
        port = echo.addr.port()
    );
    let out = mesh.exec("bulk", &["python3", "-c", &script]);
    assert!(out.status.success(), "bulk client: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "intact 200 of 200");
    let records = mesh.records_once(&echo.addr.to_string(), 200);
    let mine = records_for(&records, &echo.addr.to_string());
    assert_eq!(mine.len(), 200);
    for r in mine {
        assert_eq!(r["bytes_to_upstream"].as_u64(), Some(1 << 20), "{r:#?}");
        assert_eq!(r["bytes_to_client"].as_u64(), Some(1 << 20), "{r:#?}");
    }
}

#[test]
fn sigterm_drains_and_keeps_pinned_state() {
    let mut mesh = Mesh::start("drain", &[]);
    let cg = mesh.make_cgroup("d");
    assert!(mesh
        .meshctl(&["tag", cg.to_str().expect("utf8"), "--agent", "d"])
        .status
        .success());
    let status = mesh.stop_daemon().expect("stopped");
    assert!(status.success(), "graceful exit: {status}");
    // `v<LAYOUT_VERSION>`, the only directory the daemon pins into.
    let pins = std::fs::read_dir(&mesh.bpffs_dir)
        .expect("bpffs dir stays")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('v'))
        })
        .expect("a layout directory");
    assert!(pins.join("MESH_TAGS").exists(), "maps stay pinned");
    assert!(
        pins.join("links")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            >= 10,
        "links stay pinned"
    );
    mesh.start_daemon();
    assert!(mesh.status()["agents"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["name"] == "d")));
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    // No daemon: exit 3.
    let out = std::process::Command::new(meshctl_bin())
        .args(["--socket", "/nonexistent/mesh.sock", "status"])
        .output()
        .expect("meshctl");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("cannot reach mesh-agent"),
        "{}",
        stderr(&out)
    );

    // Usage error: exit 2.
    let out = std::process::Command::new(meshctl_bin())
        .args(["frobnicate"])
        .output()
        .expect("meshctl");
    assert_eq!(out.status.code(), Some(2));

    let mesh = Mesh::start("badinput", &[]);
    // Tagging a cgroup that does not exist: exit 1, naming it.
    let missing = mesh.attach_cgroup.join("no-such-cgroup");
    let out = mesh.meshctl(&["tag", missing.to_str().expect("utf8"), "--agent", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-cgroup"), "{}", stderr(&out));
    // Releasing an agent that is neither quarantined nor tagged: exit 1.
    // (Quarantining one is allowed: it is remembered for its first cgroup.)
    let out = mesh.meshctl(&["release", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));

    // Malformed config: file:line:col.
    let bad = mesh.dir.join("bad-config.yaml");
    std::fs::write(&bad, "listen: [\"127.0.0.1:1\"]\nlisten_typo: 3\n").expect("write");
    let out = std::process::Command::new(mesh_agent_bin())
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{}:2:1", bad.display())),
        "{}",
        stderr(&out)
    );

    // Malformed policy: file:line:col, and the daemon does not start.
    let mut broken = Mesh::new(
        "badpolicy",
        &[(
            "broken.yaml",
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: b\negress:\n  alow: []\n",
        )],
    );
    let out = std::process::Command::new(mesh_agent_bin())
        .args(["run", "--config"])
        .arg(&broken.config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.yaml:5:3"), "{}", stderr(&out));
    broken.kill_daemon();

    // Without privileges: names the missing capability.
    let out = std::process::Command::new(mesh_agent_bin())
        .args(["run", "--config"])
        .arg(&mesh.config)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run unprivileged");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CAP_BPF"), "{}", stderr(&out));
}

use std::os::unix::process::CommandExt as _;

#[allow(dead_code)]
fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn an_unprivileged_operator_can_exec_and_only_its_own_child_is_moved() {
    let server = HttpServer::start("127.0.0.2");
    // An operator: nobody, in the operators group (its primary group here),
    // which is also the socket's group.
    let operators = users::TestGroup::new("mops");
    let mut mesh = Mesh::new(
        "nonroot",
        &[("u.yaml", &egress_policy("u", &[server.addr.to_string()]))],
    );
    mesh.set_admin_groups(&operators.name, &operators.name);
    mesh.start_daemon();
    let nobody = 65534;
    let out = std::process::Command::new(meshctl_bin())
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args([
            "exec",
            "--agent",
            "u",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "20",
            &server.url(),
        ])
        .uid(nobody)
        .gid(operators.gid)
        .output()
        .expect("meshctl as nobody");
    assert!(out.status.success(), "exec as nobody: {}", stderr(&out));
    assert!(stdout(&out).contains(&server.body));
    let records = mesh.records_once(&server.addr.to_string(), 1);
    let mine = records_for(&records, &server.addr.to_string());
    assert_eq!(mine.len(), 1, "{records:#?}");
    assert_eq!(
        mine[0]["uid"].as_u64(),
        Some(u64::from(nobody)),
        "uid comes from the kernel"
    );

    // The daemon moves only the caller's own child: not pid 1.
    let api = |path: &str, body: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&mesh.admin_socket)
            .args([
                "-H",
                "content-type: application/json",
                "-d",
                body,
                &format!("http://mesh{path}"),
            ])
            .uid(nobody)
            .gid(operators.gid)
            .output()
            .expect("curl admin")
    };
    let created: serde_json::Value =
        serde_json::from_slice(&api("/v1/exec", r#"{"agent":"u"}"#).stdout).expect("exec json");
    let cgroup = created["cgroup"].as_str().expect("cgroup").to_owned();
    let out = api(
        "/v1/exec/attach",
        &format!(r#"{{"cgroup":"{cgroup}","pid":1}}"#),
    );
    assert!(
        stdout(&out).contains("not a child of the caller"),
        "{}",
        stdout(&out)
    );
    let procs = std::fs::read_to_string(format!("{cgroup}/cgroup.procs")).expect("procs");
    assert!(procs.trim().is_empty(), "nothing was moved: {procs}");
    api("/v1/exec/done", &format!(r#"{{"cgroup":"{cgroup}"}}"#));
}

#[test]
fn a_governed_process_cannot_bypass_the_mesh_with_its_socket_mark() {
    let server = HttpServer::start("127.0.0.2");
    let mesh = Mesh::start("mark", &[]);
    // Root inside the governed cgroup may set SO_MARK (36); the mesh's mark
    // exempts only the daemon's own sockets.
    let script = format!(
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, 36, 0x6d657368)\n\
         s.settimeout(10)\ns.connect(('127.0.0.2', {port}))\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         print(len(s.recv(4096)))",
        port = server.addr.port()
    );
    // The refusal closes the connection: the client may see EOF or a reset.
    let _ = mesh.exec("marked", &["python3", "-c", &script]);
    assert_eq!(
        server.count(),
        0,
        "the marked connection reached the server directly"
    );
    let records = mesh.records_once(&server.addr.to_string(), 1);
    let mine = records_for(&records, &server.addr.to_string());
    assert_eq!(mine.len(), 1, "{records:#?}");
    assert_eq!(mine[0]["verdict"], "refused_policy");
}

#[test]
fn meshctl_exec_passes_signals_on_and_still_hands_the_cgroup_back() {
    let mesh = Mesh::start("signals", &[]);
    let mut exec = std::process::Command::new(meshctl_bin())
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args(["exec", "--agent", "sig", "--", "sleep", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshctl exec");
    // Wait until the agent's cgroup holds the sleeping child.
    let holds_child = || {
        std::fs::read_dir(&mesh.parent_cgroup)
            .ok()
            .is_some_and(|d| {
                d.flatten().any(|e| {
                    std::fs::read_to_string(e.path().join("cgroup.procs"))
                        .is_ok_and(|p| !p.trim().is_empty())
                })
            })
    };
    assert!(
        wait_until(holds_child, Duration::from_secs(20)),
        "the child never started"
    );
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(exec.id() as i32, libc::SIGTERM) };
    let status = exec.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "exit code of the signalled command"
    );
    let left: Vec<_> = std::fs::read_dir(&mesh.parent_cgroup)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "exec cgroups left behind: {left:?}");
    assert!(mesh.status()["agents"].as_array().is_some_and(|a| a
        .iter()
        .all(|x| x["cgroups"].as_array().is_some_and(|c| c.is_empty()))));
}
