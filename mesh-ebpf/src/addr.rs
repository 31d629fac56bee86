//! Addresses as the socket-address hooks see them: read from the context,
//! IPv4-mapped IPv6 told apart, loopback recognised.
use aya_ebpf::bindings::bpf_sock_addr;
use mesh_common::Ip6Words;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `::ffff:0:0/96` marker word, network byte order.
pub const V4_MAPPED_MARKER: u32 = u32::from_be(0x0000_ffff);

#[derive(Copy, Clone)]
pub enum Dst {
    V4(u32),
    /// An IPv4 address reached through an AF_INET6 socket.
    V4Mapped(u32),
    V6(Ip6Words),
}

impl Dst {
    /// As map keys and events hold it: IPv4 stored IPv4-mapped.
    #[inline(always)]
    pub fn words(self) -> Ip6Words {
        match self {
            Dst::V4(a) | Dst::V4Mapped(a) => [0, 0, V4_MAPPED_MARKER, a],
            Dst::V6(w) => w,
        }
    }

    /// 127.0.0.0/8 (plain or IPv4-mapped) or ::1.
    #[inline(always)]
    pub fn is_loopback(self) -> bool {
        match self {
            // Network byte order: the first octet is the lowest byte.
            Dst::V4(a) | Dst::V4Mapped(a) => a & 0xff == 127,
            Dst::V6(w) => w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == u32::from_be(1),
        }
    }
}

/// The address and port (host byte order) of a connect4/sendmsg4/bind4 call.
#[inline(always)]
pub fn read4(sa: *mut bpf_sock_addr) -> (Dst, u16) {
    // SAFETY: sa is the verifier-checked context pointer.
    let (ip4, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    (Dst::V4(ip4), ntohs_ctx(port))
}

/// The address and port of a connect6/sendmsg6/bind6 call.
#[inline(always)]
pub fn read6(sa: *mut bpf_sock_addr) -> (Dst, u16) {
    // SAFETY: as above; the four words are read one by one (the verifier
    // accepts only 4-byte loads of user_ip6).
    let (ip6, port) = unsafe {
        (
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            (*sa).user_port,
        )
    };
    let dst = if ip6[0] == 0 && ip6[1] == 0 && ip6[2] == V4_MAPPED_MARKER {
        Dst::V4Mapped(ip6[3])
    } else {
        Dst::V6(ip6)
    };
    (dst, ntohs_ctx(port))
}

/// `user_port` holds the port in network byte order in its low 16 bits.
#[inline(always)]
fn ntohs_ctx(port: u32) -> u16 {
    u16::from_be(port as u16)
}
