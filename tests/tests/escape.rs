//! The escape suite: a governed agent tries to get around the mesh, and each
//! test fails if the escape works. Root tier: real kernel, real cgroups,
//! unmodified processes under `meshctl exec`. docs/security.md lists every
//! route with its test.
use mesh_tests::*;

/// A governed shell runs `meshctl ARGS` against the daemon's own socket,
/// as the same user (root) as the operator who started it, and says what
/// it got: `exit=N` and meshctl's stderr. `$CG` is its own cgroup.
fn meshctl_from_inside(mesh: &Mesh, agent: &str, args: &str) -> String {
    let script = format!(
        "CG=$(sed -n 's/^0:://p' /proc/self/cgroup); \
         {meshctl} --socket {socket} {args} 2>&1; echo \"exit=$?\"",
        meshctl = meshctl_bin().display(),
        socket = mesh.admin_socket.display(),
    );
    let out = mesh.exec(agent, &["sh", "-c", &script]);
    assert!(
        out.status.success(),
        "the governed shell itself failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn a_governed_process_cannot_use_the_admin_api_whatever_its_uid() {
    require_root();
    let mesh = Mesh::start("escape-admin", &[("bot.yaml", &egress_policy("bot", &[]))]);

    // Each of these would let the agent leave its policy: untag its own
    // cgroup, lift a quarantine, start itself again as another agent, tag
    // a cgroup of its choosing; reading the status is refused as well.
    for args in [
        "untag \"$CG\"",
        "release bot",
        "exec --agent other -- true",
        "tag \"$CG\" --agent other",
        "status",
    ] {
        let said = meshctl_from_inside(&mesh, "bot", args);
        assert!(
            said.contains("exit=1") && said.contains("governed as agent \"bot\""),
            "`meshctl {args}` from inside the governed cgroup was not refused:\n{said}"
        );
    }

    // The operator outside still can, and nothing the agent tried took.
    let status = mesh.meshctl(&["--output", "json", "status"]);
    assert!(
        status.status.success(),
        "status from outside: {}",
        stderr(&status)
    );
    assert!(
        !stdout(&status).contains("\"other\""),
        "the governed process managed to tag something as another agent:\n{}",
        stdout(&status)
    );
    assert!(
        mesh.daemon_log().contains("admin request refused"),
        "the refusals are not in the daemon's log"
    );
}

#[test]
fn a_process_that_outlives_meshctl_exec_stays_governed() {
    require_root();
    let forbidden = HttpServer::start("127.0.0.1");
    let mesh = Mesh::start(
        "escape-outlive",
        &[("bot.yaml", &egress_policy("bot", &[]))],
    );
    let out_file = mesh.dir.join("survivor.out");
    // The command returns at once; its detached grandchild waits until
    // meshctl exec has handed the cgroup back, then tries a destination the
    // policy forbids.
    let script = format!(
        "setsid sh -c 'sleep 2; curl -s -o /dev/null -w \"%{{http_code}}\" --max-time 10 {url} \
         > {out}.tmp 2>&1; echo \" rc=$?\" >> {out}.tmp; mv {out}.tmp {out}' \
         </dev/null >/dev/null 2>&1 &",
        url = forbidden.url(),
        out = out_file.display(),
    );
    let exec = mesh.exec("bot", &["sh", "-c", &script]);
    assert!(exec.status.success(), "meshctl exec: {}", stderr(&exec));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let said = loop {
        if let Ok(said) = std::fs::read_to_string(&out_file) {
            break said;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor never reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        forbidden.count(),
        0,
        "the process that outlived meshctl exec reached a forbidden destination ({said})"
    );
    assert!(
        said.starts_with("403"),
        "expected the mesh's refusal, got: {said}"
    );
}

/// `meshctl ARGS` against the daemon's socket, run as `user`.
fn meshctl_as(mesh: &Mesh, user: &users::TestUser, args: &[&str]) -> std::process::Output {
    let meshctl = meshctl_bin();
    let socket = mesh.admin_socket.display().to_string();
    let mut cmd = vec![meshctl.to_str().expect("utf8"), "--socket", &socket];
    cmd.extend_from_slice(args);
    user.run(&cmd)
}

#[test]
fn admin_roles_let_viewers_read_and_only_operators_change_anything() {
    require_root();
    let viewers = users::TestGroup::new("mv");
    let operators = users::TestGroup::new("mo");
    let viewer = users::TestUser::new("mview", &[&viewers]);
    let operator = users::TestUser::new("mop", &[&viewers, &operators]);
    let stranger = users::TestUser::new("mstr", &[]);
    let mut mesh = Mesh::new("escape-roles", &[("bot.yaml", &egress_policy("bot", &[]))]);
    mesh.set_admin_groups(&viewers.name, &operators.name);
    mesh.start_daemon();
    let cg = mesh.make_cgroup("bot-by-hand");
    let cg = cg.to_str().expect("utf8");
    let tag = mesh.meshctl(&["tag", cg, "--agent", "bot"]);
    assert!(tag.status.success(), "tag as root: {}", stderr(&tag));

    // A viewer reads, and is refused every change, told the role it lacks.
    let status = meshctl_as(&mesh, &viewer, &["status"]);
    assert!(
        status.status.success(),
        "viewer status: {}",
        stderr(&status)
    );
    for args in [
        vec!["untag", cg],
        vec!["quarantine", "bot"],
        vec!["policy", "reload"],
        vec!["exec", "--agent", "other", "--", "true"],
    ] {
        let out = meshctl_as(&mesh, &viewer, &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "viewer {args:?}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("needs the operator role")
                && stderr(&out).contains(&operators.name),
            "viewer {args:?} was not refused for its role: {}",
            stderr(&out)
        );
    }

    // A user in neither group cannot even reach the socket, and is told why.
    for args in [vec!["status"], vec!["untag", cg]] {
        let out = meshctl_as(&mesh, &stranger, &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "stranger {args:?}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("permission denied") && stderr(&out).contains(&viewers.name),
            "stranger {args:?}: {}",
            stderr(&out)
        );
    }

    // Nothing the viewer tried took; an operator can.
    let st = mesh.status();
    let bot = st["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "bot"))
        .cloned()
        .expect("bot still tagged");
    assert_eq!(bot["quarantined"], false, "{st:#}");
    let out = meshctl_as(&mesh, &operator, &["quarantine", "bot"]);
    assert!(
        out.status.success(),
        "operator quarantine: {}",
        stderr(&out)
    );
    let out = meshctl_as(&mesh, &operator, &["release", "bot"]);
    assert!(out.status.success(), "operator release: {}", stderr(&out));
    assert!(
        mesh.daemon_log().contains("needs the operator role"),
        "the refusals are not in the daemon's log"
    );
}

#[test]
fn meshctl_exec_user_runs_the_agent_as_that_user_and_governed() {
    require_root();
    let forbidden = HttpServer::start("127.0.0.1");
    let agent_user = users::TestUser::new("magent", &[]);
    let mesh = Mesh::start("escape-user", &[("bot.yaml", &egress_policy("bot", &[]))]);
    let script = format!(
        "id -u; curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 {}",
        forbidden.url()
    );
    let out = mesh.meshctl(&[
        "exec",
        "--agent",
        "bot",
        "--user",
        &agent_user.name,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "exec --user: {}", stderr(&out));
    let said = stdout(&out);
    let mut lines = said.lines();
    assert_eq!(
        lines.next(),
        Some(agent_user.uid.to_string().as_str()),
        "not run as the user: {said}"
    );
    assert_eq!(lines.next(), Some("403"), "not governed: {said}");
    assert_eq!(
        forbidden.count(),
        0,
        "the agent reached a forbidden destination"
    );
    let records = mesh.records_once(&forbidden.addr.to_string(), 1);
    assert!(
        records.iter().any(|r| r["agent"] == "bot"
            && r["uid"] == agent_user.uid
            && r["verdict"] == "refused_policy"),
        "no refusal recorded for the agent's uid: {records:#?}"
    );

    // A user that does not exist: nothing runs.
    let out = mesh.meshctl(&[
        "exec",
        "--agent",
        "bot",
        "--user",
        "mesh-no-such-user",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// A curl that prints only the HTTP status (`000` when the connect failed).
fn curl_status(url: &str) -> [&str; 9] {
    [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        url,
    ]
}

/// [`curl_status`] run inside `cgroup` (placed there before exec).
fn curl_code_in(cgroup: &std::path::Path, url: &str) -> String {
    stdout(&run_in_cgroup(cgroup, &curl_status(url)))
}

#[test]
fn a_new_cgroup_a_selector_matches_is_never_ungoverned() {
    require_root();
    let forbidden = HttpServer::start("127.0.0.1");
    let mut mesh = Mesh::new("escape-selector", &[]);
    let rel = mesh
        .attach_cgroup
        .strip_prefix(cgroup2_mount())
        .expect("attach below the cgroup root")
        .display()
        .to_string();
    std::fs::write(
        mesh.policy_dir.join("sel.yaml"),
        format!(
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: sel\n\
             match: {{ cgroup: \"/{rel}/sel-*\" }}\negress:\n  default: deny\n"
        ),
    )
    .expect("policy");
    mesh.start_daemon();

    // Made and used at once, as an attacker racing the selector would:
    // each connect must be refused (in the kernel while the cgroup is not
    // classified, by policy once it is tagged), never reach the server.
    let mut said = Vec::new();
    for i in 0..10 {
        let cg = mesh.make_cgroup(&format!("sel-{i}"));
        said.push(curl_code_in(&cg, &forbidden.url()));
    }
    assert_eq!(
        forbidden.count(),
        0,
        "a connect from a new matching cgroup went around the mesh: {said:?}"
    );
    assert!(
        said.iter().all(|c| c == "000" || c == "403"),
        "not refused: {said:?}"
    );
    let records = mesh.records_until(|r| {
        r["verdict"] == "refused_kernel"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("unclassified"))
    });
    assert!(
        records.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("unclassified"))),
        "no refusal of an unclassified cgroup recorded: {said:?} {records:#?}"
    );

    // A sibling no selector matches is let through once classified.
    let plain = mesh.make_cgroup("plain");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while curl_code_in(&plain, &forbidden.url()) != "200" {
        assert!(
            std::time::Instant::now() < deadline,
            "an unmatched cgroup stays refused"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Whether `meshctl status` shows `agent` quarantined.
fn quarantined(mesh: &Mesh, agent: &str) -> bool {
    mesh.status()["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == agent).cloned())
        .is_some_and(|a| a["quarantined"] == true)
}

/// Polls (up to 20 s) until `meshctl status` shows `agent` quarantined.
fn wait_quarantined(mesh: &Mesh, agent: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !quarantined(mesh, agent) {
        assert!(
            std::time::Instant::now() < deadline,
            "{agent} never quarantined:\n{}",
            mesh.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// [`curl_status`] under `meshctl exec --agent AGENT`.
fn curl_as(mesh: &Mesh, agent: &str, url: &str) -> String {
    stdout(&mesh.exec(agent, &curl_status(url)))
}

#[test]
fn quarantine_is_remembered_for_an_agent_with_no_cgroup_and_across_restarts() {
    require_root();
    let allowed = HttpServer::start("127.0.0.1");
    let mut mesh = Mesh::start(
        "escape-remember",
        &[(
            "bot.yaml",
            &egress_policy("bot", &[allowed.addr.to_string()]),
        )],
    );
    assert_eq!(curl_as(&mesh, "bot", &allowed.url()), "200");
    let served = allowed.count();

    // No cgroup of bot exists now; the quarantine is still taken.
    let out = mesh.meshctl(&["quarantine", "bot"]);
    assert!(out.status.success(), "quarantine: {}", stderr(&out));
    assert!(quarantined(&mesh, "bot"));
    assert_eq!(
        curl_as(&mesh, "bot", &allowed.url()),
        "000",
        "a new exec of bot connected"
    );
    let records = mesh.records_until(|r| r["agent"] == "bot" && r["verdict"] == "refused_kernel");
    assert!(
        records
            .iter()
            .any(|r| r["agent"] == "bot" && r["verdict"] == "refused_kernel"),
        "{records:#?}"
    );

    // A restarted daemon remembers it.
    mesh.stop_daemon();
    mesh.start_daemon();
    assert!(quarantined(&mesh, "bot"), "forgotten across a restart");
    assert_eq!(
        curl_as(&mesh, "bot", &allowed.url()),
        "000",
        "connected after a restart"
    );
    assert_eq!(
        allowed.count(),
        served,
        "a quarantined agent reached the server"
    );

    let out = mesh.meshctl(&["release", "bot"]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    assert!(!quarantined(&mesh, "bot"));
    assert_eq!(
        curl_as(&mesh, "bot", &allowed.url()),
        "200",
        "still cut after release"
    );
}

/// A policy allowing `allow` whose `quarantine` trips after `denials`
/// refusals within a minute, in `mode`.
fn trigger_policy(agent: &str, allow: &str, denials: u32, mode: &str) -> String {
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [\"{allow}\"]\n\
         quarantine:\n  triggers: [ {{ denials: {denials}, within: 1m }} ]\n  mode: {mode}\n"
    )
}

#[test]
fn refusals_past_a_quarantine_trigger_quarantine_the_agent() {
    require_root();
    let allowed = HttpServer::start("127.0.0.1");
    let forbidden = HttpServer::start("127.0.0.1");
    let mesh = Mesh::start(
        "escape-trigger",
        &[(
            "bot.yaml",
            &trigger_policy("bot", &allowed.addr.to_string(), 3, "isolate"),
        )],
    );
    assert_eq!(curl_as(&mesh, "bot", &allowed.url()), "200");
    for _ in 0..3 {
        assert_eq!(curl_as(&mesh, "bot", &forbidden.url()), "403");
    }
    wait_quarantined(&mesh, "bot");
    assert_eq!(
        curl_as(&mesh, "bot", &allowed.url()),
        "000",
        "an allowed connect of a quarantined agent went through"
    );
    let records = mesh.records();
    let refused: Vec<u64> = records
        .iter()
        .filter(|r| r["verdict"] == "refused_policy" && r["agent"] == "bot")
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let trip = records
        .iter()
        .find(|r| r["verdict"] == "quarantined")
        .unwrap_or_else(|| panic!("no quarantine record: {records:#?}"));
    assert_eq!(trip["agent"], "bot");
    assert_eq!(trip["rule"], "quarantine.triggers[0]");
    let reason = trip["reason"].as_str().unwrap_or_default();
    assert!(
        refused.len() == 3 && refused.iter().all(|id| reason.contains(&id.to_string())),
        "the record does not name the refusals {refused:?}: {reason}"
    );
}

#[test]
fn a_freeze_mode_quarantine_freezes_the_agent_and_release_thaws_it() {
    require_root();
    let forbidden = HttpServer::start("127.0.0.1");
    let mesh = Mesh::start(
        "escape-freeze",
        &[(
            "bot.yaml",
            &trigger_policy("bot", "127.0.0.9:9", 2, "freeze"),
        )],
    );
    // The agent is refused twice and then lives on.
    let script = format!(
        "for i in 1 2; do curl -s -o /dev/null --max-time 10 {}; done; exec sleep 120",
        forbidden.url()
    );
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            // Our own child, by pid: meshctl passes SIGTERM on to the agent.
            // SAFETY: signalling a child we started and have not reaped.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let mut agent = Stop(
        std::process::Command::new(meshctl_bin())
            .arg("--socket")
            .arg(&mesh.admin_socket)
            .args(["exec", "--agent", "bot", "--", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn meshctl exec"),
    );
    wait_quarantined(&mesh, "bot");
    let status = mesh.status();
    let cgroup = status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "bot").cloned())
        .and_then(|a| {
            a["cgroups"][0]["path"]
                .as_str()
                .map(std::path::PathBuf::from)
        })
        .expect("bot's cgroup");
    let frozen = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l == format!("frozen {want}")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cgroup.events never said frozen {want}: {events}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    frozen("1");
    // A new exec of a frozen agent is refused rather than started frozen.
    let out = mesh.exec("bot", &["true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("freeze"), "{}", stderr(&out));

    let out = mesh.meshctl(&["release", "bot"]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    frozen("0");
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "the agent died"
    );
}

/// The value of one sample of the daemon's metrics (0 when absent).
fn metric(mesh: &Mesh, sample: &str) -> u64 {
    mesh.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits (bounded) for a kernel refusal record of `agent` with `rule`.
fn kernel_refusals(mesh: &Mesh, agent: &str, rule: &str) -> Vec<serde_json::Value> {
    mesh.records_until(|r| r["agent"] == agent && r["rule"] == rule)
        .into_iter()
        .filter(|r| r["agent"] == agent && r["rule"] == rule && r["verdict"] == "refused_kernel")
        .collect()
}

/// A UDP server on loopback, in this (ungoverned) process: answers DNS A
/// queries with 10.1.2.3, or echoes (`dns: false`), and counts datagrams.
struct UdpServer {
    addr: std::net::SocketAddr,
    datagrams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpServer {
    fn start(ip: &str, dns: bool) -> UdpServer {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind udp");
        let addr = socket.local_addr().expect("addr");
        let datagrams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = datagrams.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = if dns {
                    dns_answer(&buf[..n])
                } else {
                    Some(buf[..n].to_vec())
                };
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        UdpServer { addr, datagrams }
    }

    fn count(&self) -> usize {
        self.datagrams.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The answer to a one-question DNS query: the question echoed and one A
/// record, 10.1.2.3, pointing back at the question's name.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
    Some(out)
}

/// A policy file for `agent` with egress `allow` entries and `ingress` ports.
fn policy_with_ingress(agent: &str, allow: &[String], ingress: &[u16]) -> String {
    let ports: Vec<String> = ingress.iter().map(u16::to_string).collect();
    format!(
        "{}ingress:\n  allow: [{}]\n",
        egress_policy(agent, allow),
        ports.join(", ")
    )
}

/// Python that tries `socket_call` and prints `LABEL=ok` or `LABEL=errno`.
const PY_TRY: &str = r#"
import socket, sys
def attempt(label, f):
    try:
        f()
        print(label + '=ok', flush=True)
    except OSError as e:
        print(label + '=' + str(e.errno), flush=True)
"#;

const EPERM: &str = "1";

/// `label=...` from a python run's output.
fn said<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix('='))
        .unwrap_or("missing")
}

#[test]
fn udp_goes_only_where_a_udp_entry_allows_it() {
    require_root();
    let resolver = UdpServer::start("127.0.0.1", true);
    let other = UdpServer::start("127.0.0.1", false);
    let mesh = Mesh::start(
        "escape-udp",
        &[(
            "bot.yaml",
            &egress_policy("bot", &[format!("udp://{}", resolver.addr)]),
        )],
    );
    // A DNS lookup through the resolver the policy names, then datagrams to
    // another UDP port (DNS elsewhere, QUIC...): unconnected (sendmsg) and
    // connected (connect).
    let script = format!(
        r#"{PY_TRY}
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + b'\x07example\x04test\x00' + b'\x00\x01\x00\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(q, ('127.0.0.1', {resolver}))
a = s.recv(512)
print('answer=' + '.'.join(str(b) for b in a[-4:]), flush=True)
attempt('sendto_other', lambda: s.sendto(q, ('127.0.0.1', {other})))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt('connect_other', lambda: c.connect(('127.0.0.1', {other})))
c6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
attempt('sendto_other_mapped', lambda: c6.sendto(q, ('::ffff:127.0.0.1', {other})))
"#,
        resolver = resolver.addr.port(),
        other = other.addr.port(),
    );
    let out = mesh.exec("bot", &["python3", "-c", &script]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(
        said(&text, "answer"),
        "10.1.2.3",
        "the allowed resolver did not answer:\n{text}"
    );
    for label in ["sendto_other", "connect_other", "sendto_other_mapped"] {
        assert_eq!(
            said(&text, label),
            EPERM,
            "{label} was not refused:\n{text}"
        );
    }
    assert_eq!(
        other.count(),
        0,
        "a datagram reached a UDP port no entry allows"
    );

    let refused = kernel_refusals(&mesh, "bot", "kernel.udp");
    let other_dst = other.addr.to_string();
    assert!(
        refused
            .iter()
            .any(|r| r["original_destination"] == other_dst.as_str()),
        "no kernel.udp record for {other_dst}: {refused:?}"
    );
    assert!(
        metric(
            &mesh,
            "mesh_cgroup_udp_total{agent=\"bot\",verdict=\"refused\"}"
        ) >= 3
    );
    assert!(
        metric(
            &mesh,
            "mesh_cgroup_udp_total{agent=\"bot\",verdict=\"allowed\"}"
        ) >= 1
    );
}

#[test]
fn sockets_other_than_tcp_and_udp_are_refused() {
    require_root();
    let mesh = Mesh::start(
        "escape-sockets",
        &[("bot.yaml", &egress_policy("bot", &[]))],
    );
    // (label, family, type, protocol): raw ICMP and raw IP, the ICMP
    // datagram socket ping uses, SCTP, MPTCP, UDP-Lite.
    let kinds: [(&str, i32, i32, i32); 6] = [
        (
            "raw_icmp",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        ("raw6", libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW),
        ("ping", libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        ("sctp", libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        (
            "mptcp",
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_MPTCP,
        ),
        (
            "udplite",
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDPLITE,
        ),
    ];
    let mut script = PY_TRY.to_owned();
    for (label, family, kind, proto) in kinds {
        script.push_str(&format!(
            "attempt('{label}', lambda: socket.socket({family}, {kind}, {proto}).close())\n"
        ));
    }
    script.push_str(
        "attempt('tcp', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())\n",
    );
    script.push_str(
        "attempt('udp', lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close())\n",
    );
    let out = mesh.exec("bot", &["python3", "-c", &script]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(said(&text, "tcp"), "ok", "{text}");
    assert_eq!(said(&text, "udp"), "ok", "{text}");
    let mut available = 0;
    for (label, family, kind, proto) in kinds {
        // What this host offers an ungoverned root process (SCTP may be
        // absent, ping sockets disabled): those must be refused inside.
        // SAFETY: socket(2) with plain integer arguments; closed at once.
        let fd = unsafe { libc::socket(family, kind, proto) };
        if fd < 0 {
            continue;
        }
        // SAFETY: the fd just created.
        unsafe { libc::close(fd) };
        available += 1;
        assert_eq!(
            said(&text, label),
            EPERM,
            "a governed {label} socket was not refused:\n{text}"
        );
    }
    assert!(
        available >= 2,
        "raw sockets should exist for root: the test proves nothing"
    );
    let refused = kernel_refusals(&mesh, "bot", "kernel.socket");
    assert!(
        refused
            .iter()
            .any(|r| r["reason"].as_str().is_some_and(|s| s.contains("type 3"))),
        "no kernel.socket record of a raw socket: {refused:?}"
    );
    assert!(
        metric(
            &mesh,
            "mesh_cgroup_refusals_total{agent=\"bot\",kind=\"socket\"}"
        ) >= 2
    );
}

#[test]
fn binds_of_fixed_ports_need_ingress_allow_and_the_listen_port_is_never_bound() {
    require_root();
    let allowed = free_port();
    let other = free_port();
    let mesh = Mesh::start(
        "escape-bind",
        &[("bot.yaml", &policy_with_ingress("bot", &[], &[allowed]))],
    );
    let listen = mesh.listen_port;
    let script = format!(
        r#"{PY_TRY}
def bind(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen()
    s.close()
def bind_udp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    s.close()
attempt('allowed_any', lambda: bind(socket.AF_INET, ('0.0.0.0', {allowed})))
attempt('other_any', lambda: bind(socket.AF_INET, ('0.0.0.0', {other})))
attempt('other_any6', lambda: bind(socket.AF_INET6, ('::', {other})))
attempt('other_udp', lambda: bind_udp(('0.0.0.0', {other})))
attempt('other_loopback', lambda: bind(socket.AF_INET, ('127.0.0.1', {other})))
attempt('other_loopback6', lambda: bind(socket.AF_INET6, ('::1', {other})))
attempt('ephemeral', lambda: bind(socket.AF_INET, ('0.0.0.0', 0)))
attempt('listen_port_any', lambda: bind(socket.AF_INET, ('0.0.0.0', {listen})))
attempt('listen_port_loopback2', lambda: bind(socket.AF_INET, ('127.0.0.2', {listen})))
"#
    );
    let out = mesh.exec("bot", &["python3", "-c", &script]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for (label, want) in [
        ("allowed_any", "ok"),
        ("other_any", EPERM),
        ("other_any6", EPERM),
        ("other_udp", EPERM),
        ("other_loopback", "ok"),
        ("other_loopback6", "ok"),
        ("ephemeral", "ok"),
        ("listen_port_any", EPERM),
        ("listen_port_loopback2", EPERM),
    ] {
        assert_eq!(said(&text, label), want, "{label}:\n{text}");
    }
    let refused = kernel_refusals(&mesh, "bot", "kernel.bind");
    let other_any = format!("0.0.0.0:{other}");
    assert!(
        refused
            .iter()
            .any(|r| r["original_destination"] == other_any.as_str()),
        "no kernel.bind record for {other_any}: {refused:?}"
    );
    assert!(
        refused.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("listen port"))),
        "no record of the listen-port bind: {refused:?}"
    );
    assert!(
        metric(
            &mesh,
            "mesh_cgroup_refusals_total{agent=\"bot\",kind=\"bind\"}"
        ) >= 5
    );
}

#[test]
fn quarantine_cuts_udp_on_connected_and_unconnected_sockets() {
    use std::io::{BufRead, BufReader, Write};
    require_root();
    let echo = UdpServer::start("127.0.0.1", false);
    let mesh = Mesh::start(
        "escape-udp-quarantine",
        &[(
            "bot.yaml",
            &egress_policy("bot", &[format!("udp://{}", echo.addr)]),
        )],
    );
    let script = format!(
        r#"{PY_TRY}
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(10)
c.connect(('127.0.0.1', {port}))
c.send(b'one'); assert c.recv(16) == b'one'
print('established', flush=True)
sys.stdin.readline()
attempt('connected_send', lambda: c.send(b'two'))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt('unconnected_send', lambda: u.sendto(b'three', ('127.0.0.1', {port})))
c.settimeout(1)
attempt('reply', lambda: c.recv(16))
"#,
        port = echo.addr.port()
    );
    let mut client = std::process::Command::new(meshctl_bin())
        .arg("--socket")
        .arg(&mesh.admin_socket)
        .args(["exec", "--agent", "bot", "--", "python3", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "established");
    assert_eq!(echo.count(), 1);

    let out = mesh.meshctl(&["quarantine", "bot"]);
    assert!(out.status.success(), "quarantine: {}", stderr(&out));
    writeln!(stdin, "go").expect("step");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let text = rest.join("\n");
    assert!(client.wait().expect("wait").success(), "{text}");
    assert_eq!(
        echo.count(),
        1,
        "a quarantined agent's datagram arrived:\n{text}"
    );
    assert_ne!(said(&text, "connected_send"), "missing", "{text}");
    assert_eq!(said(&text, "unconnected_send"), EPERM, "{text}");
    assert_ne!(said(&text, "reply"), "ok", "{text}");
    assert!(
        metric(&mesh, "mesh_cgroup_packets_dropped_total{agent=\"bot\"}") >= 1
            || said(&text, "connected_send") == EPERM,
        "the connected send was neither dropped nor refused:\n{text}"
    );
    assert!(!kernel_refusals(&mesh, "bot", "kernel").is_empty());
}

#[test]
fn the_listener_cannot_be_impersonated_while_the_daemon_is_down() {
    require_root();
    let server = HttpServer::start("127.0.0.1");
    let mut mesh = Mesh::start(
        "escape-listener",
        &[(
            "bot.yaml",
            &egress_policy("bot", &[server.addr.to_string()]),
        )],
    );
    // A cgroup tagged by hand, so that it can be used while the daemon is down.
    let cgroup = mesh.make_cgroup("bot");
    let tag = mesh.meshctl(&["tag", &cgroup.to_string_lossy(), "--agent", "bot"]);
    assert!(tag.status.success(), "tag: {}", stderr(&tag));
    let curl = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ];
    let mut before: Vec<&str> = curl.to_vec();
    let url = server.url();
    before.push(&url);
    let out = run_in_cgroup(&cgroup, &before);
    assert_eq!(
        stdout(&out),
        "200",
        "governed curl before: {}",
        stderr(&out)
    );

    mesh.kill_daemon();
    // An ungoverned process without the listener mark takes the address.
    let impostors: Vec<std::net::TcpListener> = ["127.0.0.1", "::1"]
        .iter()
        .map(|ip| std::net::TcpListener::bind((*ip, mesh.listen_port)).expect("impostor bind"))
        .collect();
    for l in &impostors {
        l.set_nonblocking(true).expect("nonblocking");
    }
    let out = run_in_cgroup(&cgroup, &before);
    assert_ne!(stdout(&out), "200", "the governed connect got through");
    let mut v6: Vec<&str> = curl.to_vec();
    let url6 = format!("http://[::1]:{}/", server.addr.port());
    v6.push(&url6);
    let out6 = run_in_cgroup(&cgroup, &v6);
    assert_ne!(stdout(&out6), "200");
    // A governed process cannot take the address either (a fixed port).
    let bind = run_in_cgroup(
        &cgroup,
        &[
            "python3",
            "-c",
            &format!(
                "{PY_TRY}attempt('bind', lambda: socket.socket().bind(('127.0.0.3', {})))",
                mesh.listen_port
            ),
        ],
    );
    assert_eq!(said(&stdout(&bind), "bind"), EPERM, "{}", stdout(&bind));
    for l in &impostors {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the impostor accepted a governed connection: {other:?}"),
        }
    }
    drop(impostors);

    // The refusals waited in the pinned ring; the restarted daemon records them.
    mesh.start_daemon();
    let refused = kernel_refusals(&mesh, "bot", "kernel.listener");
    assert!(
        !refused.is_empty(),
        "the refused connects were not recorded"
    );
    let _ = mesh.meshctl(&["untag", &cgroup.to_string_lossy()]);
}
