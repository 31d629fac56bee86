//! Carrying bytes both ways between the agent and its destination.
use tokio::net::TcpStream;

use crate::config::RELAY_BUFFER_BYTES;

/// Relays until both directions finish (half-close is propagated). Returns
/// (bytes to upstream, bytes to client); an error ends the relay and counts
/// what was carried.
pub async fn relay(mut client: TcpStream, mut upstream: TcpStream) -> (u64, u64) {
    let _ = client.set_nodelay(true);
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
