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
