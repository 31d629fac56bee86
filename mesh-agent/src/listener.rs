//! The proxy's listening sockets, bound before any program is attached and
//! marked with [`MESH_LISTENER_MARK`]: connect4/6 redirect only to a LISTEN
//! socket at the listen address that carries this mark, so whoever binds
//! the address while the daemon is down (without the privilege to set marks)
//! receives nothing.
use std::net::SocketAddr;

use mesh_common::MESH_LISTENER_MARK;
use tokio::net::TcpSocket;

use crate::{config::LISTEN_BACKLOG, proxy::conn::set_mark};

/// Binds and listens on `addr`, marked. A failure leaves nothing behind.
pub fn bind_marked(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    set_mark(&socket, MESH_LISTENER_MARK)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}
