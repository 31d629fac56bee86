//! Free TCP ports on loopback addresses, for the daemon's listener and
//! metrics and for the servers the tests and the benchmark start.
//!
//! A port handed out is only bound later (by a daemon), so it must not be
//! one the kernel could give meanwhile to a socket bound to port 0 (a test
//! server, a client): ports come from below the kernel's ephemeral range,
//! each at most once per process, starting at a place that depends on the
//! pid so that two processes rarely walk the same ports.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (32768-60999).
const FIRST_PORT: u32 = 20_000;
const PORTS: u32 = 12_000;
/// The next candidate, as an offset into the range (u32::MAX: not started).
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

fn candidates() -> impl Iterator<Item = u16> {
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % PORTS,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    (0..PORTS).map(|_| {
        let offset = NEXT.fetch_add(1, Ordering::AcqRel) % PORTS;
        (FIRST_PORT + offset) as u16
    })
}

/// A TCP port free on `ip` right now, handed out once per process.
pub fn free_port(ip: &str) -> io::Result<u16> {
    for port in candidates() {
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no port free on {ip}"),
    ))
}

/// A port free on both 127.0.0.1 and ::1: the daemon listens on both.
pub fn free_port_pair() -> io::Result<u16> {
    for port in candidates() {
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free on both 127.0.0.1 and ::1",
    ))
}

/// `preferred` when it is free on both 127.0.0.1 and ::1 (so that what a
/// person reads matches the documented port), otherwise any port free on
/// 127.0.0.1, and 15001 if even that fails.
pub fn preferred_port(preferred: u16) -> u16 {
    if TcpListener::bind(("127.0.0.1", preferred)).is_ok()
        && TcpListener::bind(("::1", preferred)).is_ok()
    {
        return preferred;
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(15001)
}
