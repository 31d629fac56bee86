//! The admin API: HTTP/JSON over a Unix socket, used by meshctl. The caller's
//! identity comes from the socket's peer credentials, never from the request.
pub mod api;
pub mod client;
pub mod roles;
pub mod server;
