//! Carrying bytes both ways between the agent and its destination.
//!
//! Two strategies, measured side by side by `cargo xtask bench`
//! (docs/benchmarks.md): splice(2) through a pipe, which never copies payload
//! into user space, and tokio's copy with large buffers. The default is the
//! faster one there; `MESH_RELAY=copy|splice` overrides it for measurement.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::OnceLock,
};

use tokio::{io::Interest, net::TcpStream};

use crate::config::{DEFAULT_RELAY_STRATEGY, RELAY_BUFFER_BYTES, RELAY_STRATEGY_ENV};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Splice,
    Copy,
}

/// The strategy in force (read once).
pub fn strategy() -> Strategy {
    static STRATEGY: OnceLock<Strategy> = OnceLock::new();
    *STRATEGY.get_or_init(|| match std::env::var(RELAY_STRATEGY_ENV).as_deref() {
        Ok("copy") => Strategy::Copy,
        Ok("splice") => Strategy::Splice,
        _ => DEFAULT_RELAY_STRATEGY,
    })
}

/// Relays until both directions finish (half-close is propagated). Returns
/// (bytes to upstream, bytes to client) carried, also when the relay ends
/// with an error.
pub async fn relay(client: TcpStream, upstream: TcpStream) -> (u64, u64) {
    let _ = client.set_nodelay(true);
    match strategy() {
        Strategy::Splice => match (Pipe::new(), Pipe::new()) {
            (Ok(up_pipe), Ok(down_pipe)) => {
                let (up, down) = tokio::join!(
                    splice_one_way(&client, &upstream, &up_pipe),
                    splice_one_way(&upstream, &client, &down_pipe),
                );
                (up, down)
            }
            _ => copy(client, upstream).await,
        },
        Strategy::Copy => copy(client, upstream).await,
    }
}

async fn copy(mut client: TcpStream, mut upstream: TcpStream) -> (u64, u64) {
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        RELAY_BUFFER_BYTES,
        RELAY_BUFFER_BYTES,
    )
    .await
    {
        Ok(counts) => counts,
        Err(e) => {
            tracing::debug!(error = %e, "relay ended with an error");
            (0, 0)
        }
    }
}

/// A non-blocking pipe used as the in-kernel buffer of one direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A bigger pipe moves more per syscall; failure just keeps the default.
        // SAFETY: fcntl on a valid fd.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                RELAY_BUFFER_BYTES as libc::c_int,
            )
        };
        Ok(Pipe { read, write })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between valid fds with null offsets (sockets and pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn shutdown(stream: &TcpStream, how: libc::c_int) {
    // SAFETY: shutdown on a valid socket fd; errors (not connected) are moot.
    unsafe { libc::shutdown(stream.as_raw_fd(), how) };
}

/// Moves `from` -> pipe -> `to` until EOF, then half-closes `to`. On error
/// both sockets are shut down so the other direction ends too.
async fn splice_one_way(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> u64 {
    let mut total = 0u64;
    let result: io::Result<()> = async {
        loop {
            let filled = loop {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    splice(from.as_raw_fd(), pipe.write.as_raw_fd(), RELAY_BUFFER_BYTES)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if filled == 0 {
                shutdown(to, libc::SHUT_WR);
                return Ok(());
            }
            let mut left = filled;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
                }) {
                    Ok(n) => {
                        left -= n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "relay direction ended with an error");
        shutdown(from, libc::SHUT_RDWR);
        shutdown(to, libc::SHUT_RDWR);
    }
    total
}
