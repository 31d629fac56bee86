//! One accepted connection, as far as it is known (who, from where, to
//! where, speaking what), the one record a connection gets, and the dial to
//! its original destination.
//!
//! The dial's syscalls (the socket, its SO_MARK, nodelay) sit behind
//! [`SocketFactory`], so that the logic above them runs without the
//! privilege a mark needs; [`MarkedSockets`] is what the daemon uses.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    time::{Instant, SystemTime},
};

use tokio::net::{TcpSocket, TcpStream};

use super::Proxy;
use crate::{
    addr::{ClientAddr, OrigDst},
    config::UPSTREAM_CONNECT_TIMEOUT,
    l7::Protocol,
    records::{unix_ms, ConnectionRecord, Identity, Verdict},
};

/// One accepted connection, as far as it is known.
pub struct Conn {
    pub(crate) started: SystemTime,
    pub(crate) clock: Instant,
    pub(crate) client: ClientAddr,
    pub(crate) identity: Option<Identity>,
    pub(crate) dst: Option<OrigDst>,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) server_name: Option<String>,
    /// The agent's connection slot, held while the connection lives.
    pub(crate) slot: Option<super::limits::ConnSlot>,
}

impl Conn {
    /// A connection just accepted from `client`: nothing else known yet.
    pub(crate) fn new(client: ClientAddr) -> Conn {
        Conn {
            started: SystemTime::now(),
            clock: Instant::now(),
            client,
            identity: None,
            dst: None,
            protocol: None,
            server_name: None,
            slot: None,
        }
    }

    pub(crate) fn agent(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.agent.as_deref())
    }

    /// A record of this connection (or of a request on it): who, from where,
    /// to where, and what was decided.
    pub(crate) fn record(
        &self,
        id: u64,
        start_unix_ms: u64,
        verdict: Verdict,
        rule: String,
    ) -> ConnectionRecord {
        ConnectionRecord {
            client: Some(self.client.to_string()),
            original_destination: self.dst.map(|d| d.to_string()),
            ..ConnectionRecord::new(id, start_unix_ms, self.identity.as_ref(), verdict, rule)
        }
    }
}

impl Proxy {
    /// The connection's record and metric, once it is decided or over.
    /// Closes a connection the policy refuses and writes its record.
    pub(super) fn refuse(&self, conn: &Conn, client: TcpStream, rule: &str, reason: String) {
        drop(client);
        self.finish(conn, Verdict::RefusedPolicy, rule, Some(reason), (0, 0));
    }

    pub(super) fn finish(
        &self,
        conn: &Conn,
        verdict: Verdict,
        rule: &str,
        reason: Option<String>,
        (up, down): (u64, u64),
    ) {
        let agent = conn.agent();
        let protocol = conn.protocol.unwrap_or(Protocol::Tcp);
        // HTTP connections count their requests, not themselves.
        if protocol != Protocol::Http {
            self.metrics.record_connection(agent, protocol, verdict);
        }
        self.records.push(ConnectionRecord {
            reason,
            bytes_to_upstream: up,
            bytes_to_client: down,
            duration_ms: conn.clock.elapsed().as_millis() as u64,
            protocol: conn.protocol.filter(|p| *p != Protocol::Tcp),
            server_name: conn.server_name.clone(),
            ..conn.record(
                self.records.next_id(),
                unix_ms(conn.started),
                verdict,
                rule.to_owned(),
            )
        });
    }
}

/// Makes the sockets the proxy dials upstream from: a new TCP socket for
/// `target`'s family, set up as the mesh's own, not yet connected.
pub trait SocketFactory: Send + Sync {
    fn new_tcp(&self, target: SocketAddr) -> std::io::Result<TcpSocket>;
}

/// Sockets marked with `mark` (SO_MARK) so the connect programs never
/// redirect them (the second guard after not living in a governed cgroup);
/// `None` only where setting a mark is not permitted (unprivileged tests).
pub struct MarkedSockets {
    pub mark: Option<u32>,
}

impl SocketFactory for MarkedSockets {
    fn new_tcp(&self, target: SocketAddr) -> std::io::Result<TcpSocket> {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(mark) = self.mark {
            set_mark(&socket, mark)?;
        }
        socket.set_nodelay(true)?;
        Ok(socket)
    }
}

/// Dials the original destination from a socket of `sockets`, giving up
/// after [`UPSTREAM_CONNECT_TIMEOUT`].
pub(crate) async fn connect_upstream(
    sockets: &dyn SocketFactory,
    dst: OrigDst,
) -> std::io::Result<TcpStream> {
    let target: SocketAddr = dst.0;
    let socket = sockets.new_tcp(target)?;
    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "upstream connect timed out",
        )),
    }
}

pub(crate) fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt on a valid fd with a u32 option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
