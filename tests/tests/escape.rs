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
