//! Stopping child processes this process started, by pid (never by name).

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Waits up to `wait` for `child` to exit by itself, then kills it; reaps it
/// either way. Returns the status when it exited in time.
pub fn wait_or_kill(child: &mut Child, wait: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SIGTERM (by pid, a child we started), then SIGKILL after `grace`.
/// Returns the status when it exited in time.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own, not yet reaped, child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    wait_or_kill(child, grace)
}
