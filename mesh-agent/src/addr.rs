//! Typed addresses, so that the client end and the original destination of a
//! connection cannot be mixed up, and the conversions to the kernel's layout.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use mesh_common::{Ip6Words, PeerKey};

/// Where the governed process meant to connect (recovered from the kernel).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The governed process's end of the connection, as accept() reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

impl fmt::Display for OrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An IPv6 address as the kernel's context words (network byte order in
/// memory).
pub fn ip6_words(ip: Ipv6Addr) -> Ip6Words {
    let o = ip.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

fn words_ip6(words: &Ip6Words) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl ClientAddr {
    /// The `MESH_PEERS` key: IPv4 stored IPv4-mapped, as sock_ops writes it.
    pub fn peer_key(&self) -> PeerKey {
        PeerKey {
            addr: ip6_words(mapped(self.0.ip())),
            port: u32::from(self.0.port()),
        }
    }
}

impl OrigDst {
    /// From the kernel record; IPv4-mapped addresses come back as IPv4.
    pub fn from_kernel(addr: &Ip6Words, port: u16) -> OrigDst {
        let v6 = words_ip6(addr);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        OrigDst(SocketAddr::new(ip, port))
    }

    /// Normalised for matching: IPv4-mapped IPv6 becomes IPv4.
    pub fn normalized(self) -> SocketAddr {
        match self.0.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), self.0.port()),
                None => self.0,
            },
            IpAddr::V4(_) => self.0,
        }
    }
}

/// The unspecified address of the same family (for logs and defaults).
pub fn unspecified_like(addr: &SocketAddr) -> IpAddr {
    match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_client_and_mapped_v6_client_share_a_key() {
        let v4 = ClientAddr("127.0.0.1:40000".parse().unwrap());
        let v6 = ClientAddr("[::ffff:127.0.0.1]:40000".parse().unwrap());
        assert_eq!(v4.peer_key(), v6.peer_key());
        assert_eq!(v4.peer_key().port, 40000);
    }

    #[test]
    fn kernel_words_round_trip() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst = OrigDst::from_kernel(&ip6_words(ip), 443);
        assert_eq!(dst.0, "[2001:db8::1]:443".parse().unwrap());
        let v4 = OrigDst::from_kernel(&ip6_words(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()), 80);
        assert_eq!(v4.0, "127.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn words_match_the_kernel_byte_order() {
        // 127.0.0.2 in network byte order is the bytes 7f 00 00 02.
        let w = ip6_words(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(w[3].to_ne_bytes(), [127, 0, 0, 2]);
        assert_eq!(w[2].to_ne_bytes(), [0, 0, 0xff, 0xff]);
    }
}
