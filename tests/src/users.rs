//! Unix users and groups a test makes (unique names, removed by a guard even
//! when the test fails), and running a command as one of them.
use std::process::{Command, Output, Stdio};

/// A group made for a test; `groupdel` on drop.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    /// `prefix` plus the test process's pid, so that parallel runs differ.
    pub fn new(prefix: &str) -> TestGroup {
        let name = format!("{prefix}{}", std::process::id());
        let _ = Command::new("groupdel").arg(&name).output();
        let out = Command::new("groupadd")
            .arg(&name)
            .output()
            .expect("run groupadd");
        assert!(
            out.status.success(),
            "groupadd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entry = Command::new("getent")
            .args(["group", &name])
            .output()
            .expect("run getent");
        let gid = String::from_utf8_lossy(&entry.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid of the new group");
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A user made for a test (no home directory, its own primary group
/// removed with it), in the supplementary groups given; `userdel` on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
}

impl TestUser {
    pub fn new(prefix: &str, groups: &[&TestGroup]) -> TestUser {
        let name = format!("{prefix}{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let mut cmd = Command::new("useradd");
        cmd.args(["--no-create-home", "--user-group", "--shell", "/bin/sh"]);
        if !groups.is_empty() {
            let list: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            cmd.arg("--groups").arg(list.join(","));
        }
        let out = cmd.arg(&name).output().expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = Command::new("id")
            .args(["-u", &name])
            .output()
            .expect("run id");
        let uid = String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse()
            .expect("uid of the new user");
        TestUser { name, uid }
    }

    /// `cmd` run as this user, with its groups (`setpriv --init-groups`).
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.name))
            .arg(format!("--regid={}", self.name))
            .arg("--init-groups")
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // --user-group made a group of the same name; userdel removes it.
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
