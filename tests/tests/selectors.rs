//! Policy selectors (`match: {cgroup: GLOB}`, ARCHITECTURE.md 5.2), end to
//! end: cgroups created below the test's attach cgroup after the daemon
//! started are governed by the matching policy's agent; siblings that do not
//! match stay ungoverned; explicit tags win; a reload that drops the selector
//! undoes only what it tagged. Root, real kernel, real cgroups.
use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use mesh_tests::*;

/// Removes a cgroup the test made (processes in it were waited for).
struct CgroupGuard(PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}

/// The agent governing the cgroup at `path` according to `meshctl status`.
fn tagged_agent(mesh: &Mesh, path: &Path) -> Option<String> {
    let status = mesh.status();
    let path = path.display().to_string();
    status["agents"].as_array()?.iter().find_map(|agent| {
        agent["cgroups"]
            .as_array()?
            .iter()
            .any(|c| c["path"] == path.as_str())
            .then(|| agent["name"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// Polls (up to 5 s) until `path` is tagged as `want` (`None`: untagged).
fn wait_tag(mesh: &Mesh, path: &Path, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = tagged_agent(mesh, path);
        if now.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} is tagged {now:?}, expected {want:?}:\n{}",
            path.display(),
            mesh.daemon_log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn selector_policy(agent: &str, glob: Option<&str>, allow: &str) -> String {
    let selector = glob
        .map(|g| format!("match: {{ cgroup: \"{g}\" }}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: {agent}\n{selector}\
         egress:\n  default: deny\n  allow: [\"{allow}\"]\n"
    )
}

/// `curl -w '\n%{http_code}'` run inside `cgroup`: (status, body).
fn curl_in(cgroup: &Path, url: &str) -> (u16, String) {
    let out = run_in_cgroup(
        cgroup,
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
    assert!(out.status.success(), "curl {url}: {}", stderr(&out));
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("http code"), body.to_owned())
}

#[test]
fn cgroups_matching_a_selector_are_governed_by_its_agent() {
    let allowed = HttpServer::start("127.0.0.2");
    let other = HttpServer::start("127.0.0.2");
    let mut mesh = Mesh::new("selectors", &[]);
    let root = cgroup2_mount();
    let attach_rel = mesh
        .attach_cgroup
        .strip_prefix(&root)
        .expect("attach below the cgroup root")
        .display()
        .to_string();
    let glob = format!("/{attach_rel}/sel-*");
    std::fs::write(
        mesh.policy_dir.join("sel.yaml"),
        selector_policy("sel", Some(&glob), &allowed.addr.to_string()),
    )
    .expect("policy");
    mesh.start_daemon();

    // Created after the daemon started.
    let matching = CgroupGuard(mesh.make_cgroup("sel-one"));
    let sibling = CgroupGuard(mesh.make_cgroup("plain-one"));
    wait_tag(&mesh, &matching.0, Some("sel"));

    // Its connections are decided by the agent's policy.
    let (code, body) = curl_in(&matching.0, &allowed.url());
    assert_eq!((code, body.as_str()), (200, allowed.body.as_str()));
    let (code, body) = curl_in(&matching.0, &other.url());
    assert_eq!(code, 403, "not in sel's egress.allow: {body}");
    let records = mesh.records_once(&other.addr.to_string(), 1);
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["original_destination"] == other.addr.to_string().as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{records:#?}");
    assert_eq!(refused[0]["agent"], "sel");
    assert_eq!(refused[0]["verdict"], "refused_policy");

    // The sibling is not governed: it reaches the other server directly,
    // with no record.
    assert_eq!(tagged_agent(&mesh, &sibling.0), None);
    let served = other.count();
    let before = mesh.records().len();
    let (code, body) = curl_in(&sibling.0, &other.url());
    assert_eq!((code, body.as_str()), (200, other.body.as_str()));
    assert_eq!(other.count(), served + 1);
    assert_eq!(mesh.records().len(), before, "the sibling is not governed");

    // An explicit tag wins over the selector, even on a matching cgroup.
    let explicit = CgroupGuard(mesh.make_cgroup("sel-explicit"));
    let out = mesh.meshctl(&[
        "tag",
        explicit.0.to_str().expect("utf8"),
        "--agent",
        "manual",
    ]);
    assert!(out.status.success(), "tag: {}", stderr(&out));
    // A reload runs a selector pass at once; the operator's tag stays.
    let out = mesh.meshctl(&["policy", "reload"]);
    assert!(out.status.success(), "reload: {}", stderr(&out));
    assert_eq!(tagged_agent(&mesh, &explicit.0).as_deref(), Some("manual"));

    // The selector is dropped: what it tagged is untagged, the explicit tag
    // stays.
    std::fs::write(
        mesh.policy_dir.join("sel.yaml"),
        selector_policy("sel", None, &allowed.addr.to_string()),
    )
    .expect("policy");
    let out = mesh.meshctl(&["policy", "reload"]);
    assert!(out.status.success(), "reload: {}", stderr(&out));
    wait_tag(&mesh, &matching.0, None);
    assert_eq!(tagged_agent(&mesh, &explicit.0).as_deref(), Some("manual"));
    let served = other.count();
    let (code, _) = curl_in(&matching.0, &other.url());
    assert_eq!(code, 200, "ungoverned again");
    assert_eq!(other.count(), served + 1);
}
