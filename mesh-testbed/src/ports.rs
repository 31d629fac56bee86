//! Free TCP ports on loopback addresses, for the daemon's listener and
//! metrics and for the servers the tests and the benchmark start.

use std::io;
use std::net::TcpListener;

/// A TCP port free on `ip` right now (the kernel's choice).
pub fn free_port(ip: &str) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))
        .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}:0: {e}")))?
        .local_addr()?
        .port())
}

/// A port free on both 127.0.0.1 and ::1: the daemon listens on both.
pub fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let port = free_port("127.0.0.1")?;
        if TcpListener::bind(("::1", port)).is_ok() {
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
