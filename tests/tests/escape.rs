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
