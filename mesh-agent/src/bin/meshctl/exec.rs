//! `meshctl exec`: CMD run in a fresh governed cgroup, governed from its
//! first instruction.
use std::{
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    process::ExitCode,
};

use crate::user;
use mesh_agent::{
    admin::{
        api::{self, AttachRequest, CgroupRequest, CgroupResponse, ExecRequest},
        client::{AdminClient, ClientError},
    },
    config::MESHCTL_EXIT_FAILED as EXIT_FAILED,
};

/// Creates a governed cgroup through the daemon and runs CMD inside it, then
/// hands the cgroup back. CMD starts as `meshctl exec-gate`, which waits on a
/// pipe until the daemon has moved it into the cgroup and only then execs CMD
/// (same pid), so CMD's first connect is already governed. The daemon does the
/// move: cgroup v2 would not let an unprivileged caller do it.
///
/// With `user`, CMD runs as that user (the gate switches after the move,
/// before it execs CMD); meshctl must then run as root.
pub(crate) async fn exec(
    client: &AdminClient,
    agent: &str,
    user: Option<&str>,
    cmd: &[String],
) -> Result<ExitCode, ClientError> {
    if let Some(name) = user {
        // Checked before the daemon is asked for anything.
        if let Err(e) = user::lookup(name).and_then(|u| user::may_become(&u)) {
            eprintln!("meshctl: {e}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let r: CgroupResponse = client
        .post(
            api::EXEC,
            &ExecRequest {
                agent: agent.to_owned(),
            },
        )
        .await?;
    let status = run_gated(client, &r.cgroup, user, cmd).await;
    let done: Result<CgroupResponse, _> = client
        .post(
            api::EXEC_DONE,
            &CgroupRequest {
                cgroup: r.cgroup.clone(),
            },
        )
        .await;
    if let Err(e) = done {
        eprintln!("meshctl: warning: releasing cgroup {}: {e}", r.cgroup);
    }
    let status = status?;
    match status {
        Ok(s) => Ok(match (s.code(), s.signal()) {
            (Some(code), _) => ExitCode::from(code as u8),
            (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
            _ => ExitCode::from(EXIT_FAILED),
        }),
        Err(e) => {
            eprintln!("meshctl: cannot run {}: {e}", cmd[0]);
            // Like a shell: 127 when the command is not found.
            Ok(ExitCode::from(
                if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                },
            ))
        }
    }
}

/// Spawns the gate, has the daemon move it into `cgroup`, opens the gate and
/// waits for CMD.
async fn run_gated(
    client: &AdminClient,
    cgroup: &str,
    user: Option<&str>,
    cmd: &[String],
) -> Result<std::io::Result<std::process::ExitStatus>, ClientError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds. The write end is close-on-exec, so the
    // gate sees EOF (and gives up) if meshctl dies before opening it.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), 0) } != 0 {
        return Ok(Err(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned here.
    let (gate_read, gate_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an owned fd.
    unsafe { libc::fcntl(gate_write.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => return Ok(Err(e)),
    };
    let mut gate_cmd = std::process::Command::new(me);
    gate_cmd
        .arg("exec-gate")
        .arg("--fd")
        .arg(gate_read.as_raw_fd().to_string());
    if let Some(name) = user {
        gate_cmd.arg("--user").arg(name);
    }
    let mut child = match gate_cmd.arg("--").args(cmd).spawn() {
        Ok(child) => child,
        Err(e) => return Ok(Err(e)),
    };
    drop(gate_read);
    let attached: Result<CgroupResponse, _> = client
        .post(
            api::EXEC_ATTACH,
            &AttachRequest {
                cgroup: cgroup.to_owned(),
                pid: child.id(),
            },
        )
        .await;
    if let Err(e) = attached {
        // Closing the gate unopened makes the child give up without running CMD.
        drop(gate_write);
        let _ = child.wait();
        return Err(e);
    }
    let mut gate = std::fs::File::from(gate_write);
    if let Err(e) = gate.write_all(b"g") {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Err(e));
    }
    drop(gate);
    Ok(wait_forwarding_signals(child).await)
}

/// Waits for CMD, passing on the signals meant for it, so that meshctl itself
/// lives to hand the cgroup back (Ctrl-C, `kill`, a closed terminal).
async fn wait_forwarding_signals(
    child: std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let pid = child.id() as libc::pid_t;
    let mut waiting = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        streams.push((signal(kind)?, number));
    }
    let [(int, n_int), (term, n_term), (hup, n_hup), (quit, n_quit)] = &mut streams[..] else {
        return Err(std::io::Error::other("signal setup"));
    };
    loop {
        let number = tokio::select! {
            status = &mut waiting => {
                return status.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            }
            _ = int.recv() => *n_int,
            _ = term.recv() => *n_term,
            _ = hup.recv() => *n_hup,
            _ = quit.recv() => *n_quit,
        };
        // SAFETY: signalling our own child by pid. The wait above had not
        // returned when the signal arrived; a pid is not reused in the few
        // instructions between a reap there and this call.
        unsafe { libc::kill(pid, number) };
    }
}

/// `meshctl exec-gate --fd N [--user NAME] -- CMD…` (internal): wait for
/// one byte on fd N, then become NAME (if given) and CMD. EOF means meshctl
/// gave up: exit without running CMD; so does a failed user switch.
pub(crate) fn exec_gate(fd: i32, user: Option<&str>, cmd: &[String]) -> ExitCode {
    let mut byte = [0u8; 1];
    // SAFETY: fd was inherited from meshctl for exactly this read.
    let gate = unsafe { OwnedFd::from_raw_fd(fd) };
    let n = std::fs::File::from(gate).read(&mut byte).unwrap_or(0);
    if n != 1 {
        eprintln!("meshctl: not started: the cgroup could not be set up");
        return ExitCode::from(EXIT_FAILED);
    }
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    if let Some(name) = user {
        let switched = user::lookup(name).and_then(|u| user::become_user(&u).map(|()| u));
        match switched {
            Ok(u) => {
                command
                    .env("HOME", &u.home)
                    .env("USER", &u.name)
                    .env("LOGNAME", &u.name);
            }
            Err(e) => {
                eprintln!("meshctl: not started: cannot run as user {name}: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    let err = command.exec();
    eprintln!("meshctl: cannot run {}: {err}", cmd[0]);
    // Like a shell: 127 when the command is not found.
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}
