//! Protocol detection from the first bytes a client sends: a TLS ClientHello
//! (with its SNI and ALPN), an HTTP/1.x request line, the HTTP/2 prior-knowledge
//! preface, or anything else (opaque TCP).
//!
//! Pure and without I/O: the proxy peeks at the socket, calls [`sniff`] on what
//! it has, and peeks again while the answer is [`SniffStatus::NeedMore`]. The
//! input is whatever a governed process chose to send, so every length is
//! bounds-checked and no input panics.
//!
//! The TLS parse is deliberately strict about ambiguity (duplicate extensions,
//! several host names, trailing bytes): when the mesh decides on a name, the
//! server must not be able to read a different one from the same bytes. Such a
//! hello is still classified as TLS, but with no name, so policy falls back to
//! the destination address.

/// How many bytes [`sniff`] may ask for at most: one full TLS record (16 KiB of
/// plaintext and its 5-byte header), enough for any ClientHello seen in
/// practice. With this many bytes (or more) the answer is always final.
pub const SNIFF_MAX_BYTES: usize = 16 * 1024 + 5;

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Request methods recognised as the start of an HTTP/1.x request line. An
/// extension method is deliberately not recognised: such traffic is opaque.
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// TLS record content type of a handshake record.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Largest plaintext fragment a TLS record may carry (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const SNI_HOST_NAME: u8 = 0;

/// What the client speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS handshake opening with a ClientHello.
    Tls(ClientHello),
    /// An HTTP/1.x request line with a standard method.
    Http1,
    /// The HTTP/2 prior-knowledge preface (cleartext h2).
    Http2PriorKnowledge,
    /// Anything else; relayed as bytes.
    Opaque,
}

/// What the mesh learns from a ClientHello before deciding anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lowercased; `None` when absent,
    /// not a valid ASCII host name, ambiguous, or not parsed (see `complete`).
    pub sni: Option<String>,
    /// The ALPN protocols offered, in the client's order (empty when absent).
    pub alpn: Vec<Vec<u8>>,
    /// The whole ClientHello was read and well formed. When false (fragmented
    /// beyond [`SNIFF_MAX_BYTES`], cut short, or malformed), `sni` is `None`
    /// and `alpn` is empty: nothing from a partial parse is trusted.
    pub complete: bool,
    /// The client offered Encrypted Client Hello: `sni` is then only the outer
    /// (public) name, not necessarily the server it means to reach.
    pub ech: bool,
}

/// The answer so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SniffStatus {
    Done(Sniffed),
    /// The bytes so far are a prefix of something recognisable; peek again
    /// once more bytes arrived (or call [`sniff_final`] if none will).
    NeedMore,
}

/// Decides from the bytes peeked so far. `NeedMore` only while the answer
/// could still change and fewer than [`SNIFF_MAX_BYTES`] bytes are available.
pub fn sniff(buf: &[u8]) -> SniffStatus {
    let status = sniff_inner(buf);
    if status == SniffStatus::NeedMore && buf.len() >= SNIFF_MAX_BYTES {
        // Cannot happen with the current rules (only a TLS hello asks for that
        // many bytes and it is bounded), but the contract is worth a guard.
        return SniffStatus::Done(sniff_final(buf));
    }
    status
}

/// The final answer when no more bytes will come (the client closed, or went
/// quiet past the sniffing timeout). Something that began like a TLS handshake
/// record is TLS (with no name); any other unfinished prefix is opaque.
pub fn sniff_final(buf: &[u8]) -> Sniffed {
    match sniff_inner(buf) {
        SniffStatus::Done(s) => s,
        SniffStatus::NeedMore => {
            if buf.len() >= 2 && buf[0] == CONTENT_HANDSHAKE && buf[1] == 0x03 {
                Sniffed::Tls(ClientHello::default())
            } else {
                Sniffed::Opaque
            }
        }
    }
}

fn sniff_inner(buf: &[u8]) -> SniffStatus {
    let Some(&first) = buf.first() else {
        return SniffStatus::NeedMore;
    };
    if first == CONTENT_HANDSHAKE {
        return sniff_tls(buf);
    }
    if buf.starts_with(H2_PREFACE) {
        return SniffStatus::Done(Sniffed::Http2PriorKnowledge);
    }
    if H2_PREFACE.starts_with(buf) {
        // Also covers "P", which may still turn out to be POST, PUT or PATCH.
        return SniffStatus::NeedMore;
    }
    sniff_http1(buf)
}

fn sniff_http1(buf: &[u8]) -> SniffStatus {
    let mut could_match = false;
    for method in HTTP1_METHODS {
        let n = method.len();
        if buf.len() > n {
            if buf.starts_with(method) && buf[n] == b' ' {
                return SniffStatus::Done(Sniffed::Http1);
            }
        } else if method.starts_with(buf) {
            could_match = true;
        }
    }
    if could_match {
        SniffStatus::NeedMore
    } else {
        SniffStatus::Done(Sniffed::Opaque)
    }
}

/// Accepts `0x16 0x03 0x0X <len:2> 0x01 …` as TLS; reassembles the ClientHello
/// from as many handshake records as are present and parses it when whole.
fn sniff_tls(buf: &[u8]) -> SniffStatus {
    // Record header: type, version (2), length (2); then the handshake type.
    if buf.len() >= 2 && buf[1] != 0x03 {
        return SniffStatus::Done(Sniffed::Opaque);
    }
    if buf.len() >= 3 && buf[2] > 0x0f {
        return SniffStatus::Done(Sniffed::Opaque);
    }
    if buf.len() >= 5 && u16::from_be_bytes([buf[3], buf[4]]) == 0 {
        return SniffStatus::Done(Sniffed::Opaque);
    }
    if buf.len() < 6 {
        return SniffStatus::NeedMore;
    }
    if buf[5] != HANDSHAKE_CLIENT_HELLO {
        return SniffStatus::Done(Sniffed::Opaque);
    }
    let incomplete = || SniffStatus::Done(Sniffed::Tls(ClientHello::default()));

    // Reassemble the handshake message across records.
    let mut message: Vec<u8> = Vec::new();
    let mut at = 0usize;
    let mut wanted: Option<usize> = None;
    let total = loop {
        if let Some(total) = wanted {
            if message.len() >= total {
                break total;
            }
        }
        let Some(header) = buf.get(at..at + 5) else {
            return need_more_or(buf, incomplete);
        };
        if header[0] != CONTENT_HANDSHAKE || header[1] != 0x03 {
            // Something other than the rest of the hello interleaved: not
            // parsable, but it did open as a TLS handshake.
            return incomplete();
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_FRAGMENT {
            return incomplete();
        }
        let start = at + 5;
        let end = start + len;
        let available = &buf[start..buf.len().min(end)];
        message.extend_from_slice(available);
        if wanted.is_none() && message.len() >= 4 {
            let body = u24(&message[1..4]);
            let total = 4 + body;
            // The fewest bytes this hello can take on the wire: one header
            // per full fragment. Beyond the sniffing budget, give up now.
            let records = total.div_ceil(MAX_FRAGMENT);
            if message[0] != HANDSHAKE_CLIENT_HELLO || total + 5 * records > SNIFF_MAX_BYTES {
                return incomplete();
            }
            wanted = Some(total);
        }
        if end > buf.len() {
            return need_more_or(buf, incomplete);
        }
        at = end;
    };
    match parse_client_hello(&message[4..total]) {
        Some(hello) => SniffStatus::Done(Sniffed::Tls(hello)),
        None => incomplete(),
    }
}

fn need_more_or(buf: &[u8], give_up: impl Fn() -> SniffStatus) -> SniffStatus {
    if buf.len() >= SNIFF_MAX_BYTES {
        give_up()
    } else {
        SniffStatus::NeedMore
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A bounds-checked reader over a byte slice; every read returns `None`
/// rather than running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a ClientHello body (after the 4-byte handshake header). `None` when
/// malformed or ambiguous.
fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    let compression = r.vec8()?;
    if compression.is_empty() {
        return None;
    }
    let mut hello = ClientHello {
        complete: true,
        ..ClientHello::default()
    };
    if r.is_empty() {
        // A hello without extensions (SSL 3.0 style): no name, no ALPN.
        return Some(hello);
    }
    let mut exts = Reader(r.vec16()?);
    if !r.is_empty() {
        return None;
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        match ty {
            EXT_SERVER_NAME => {
                if seen_sni {
                    return None;
                }
                seen_sni = true;
                hello.sni = parse_server_name(data)?;
            }
            EXT_ALPN => {
                if seen_alpn {
                    return None;
                }
                seen_alpn = true;
                hello.alpn = parse_alpn(data)?;
            }
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

/// The server_name extension (RFC 6066 §3). Outer `None`: malformed or
/// ambiguous (two host names); inner `None`: no usable host name.
fn parse_server_name(data: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16()?);
    if !r.is_empty() {
        return None;
    }
    let mut host: Option<&[u8]> = None;
    while !list.is_empty() {
        let ty = list.u8()?;
        let name = list.vec16()?;
        if ty == SNI_HOST_NAME {
            if host.is_some() {
                return None;
            }
            host = Some(name);
        }
    }
    Some(host.and_then(valid_host_name))
}

/// A DNS host name in ASCII (letters, digits, `-`, and `_` which some internal
/// names use), dot-separated labels of 1–63 bytes, at most 253 bytes;
/// lowercased. Anything else (including non-ASCII, or a trailing dot, which
/// RFC 6066 forbids) is not a name the mesh decides on.
fn valid_host_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    let s = std::str::from_utf8(name).ok()?;
    Some(s.to_ascii_lowercase())
}

/// The ALPN extension (RFC 7301 §3.1): a non-empty list of non-empty names.
fn parse_alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16()?);
    if !r.is_empty() || list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let proto = list.vec8()?;
        if proto.is_empty() {
            return None;
        }
        out.push(proto.to_vec());
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    pub(crate) fn client_hello_bytes(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Re-frames a single-record hello into records of at most `size` bytes.
    fn fragment(single: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in single[5..].chunks(size) {
            out.extend_from_slice(&single[..3]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn tls(status: SniffStatus) -> ClientHello {
        match status {
            SniffStatus::Done(Sniffed::Tls(h)) => h,
            other => panic!("expected TLS, got {other:?}"),
        }
    }

    /// A minimal, hand-built hello with the given extensions.
    fn hello_with_extensions(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext_bytes = Vec::new();
        for (ty, data) in exts {
            ext_bytes.extend_from_slice(&ty.to_be_bytes());
            ext_bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn sni_ext(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, n) in names {
            list.push(*ty);
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&list);
        out
    }

    #[test]
    fn a_real_client_hello_yields_sni_and_alpn() {
        let bytes = client_hello_bytes("example.test", &[b"h2", b"http/1.1"]);
        let hello = tls(sniff(&bytes));
        assert_eq!(hello.sni.as_deref(), Some("example.test"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(hello.complete);
        assert!(!hello.ech);
        // Bytes after the hello (the client's next flight) change nothing.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        assert_eq!(tls(sniff(&more)), hello);
    }

    #[test]
    fn a_truncated_hello_is_never_opaque() {
        let bytes = client_hello_bytes("example.test", &[b"h2", b"http/1.1"]);
        for n in 0..bytes.len() {
            match sniff(&bytes[..n]) {
                SniffStatus::NeedMore => {}
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
            match sniff_final(&bytes[..n]) {
                Sniffed::Tls(h) => assert!(h.sni.is_none() && !h.complete),
                Sniffed::Opaque if n < 2 => {}
                other => panic!("final on prefix of {n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn a_hello_over_several_records_is_reassembled() {
        let single = client_hello_bytes("Multi.Example.test", &[b"h2"]);
        for size in [1, 3, 4, 50, 200] {
            let split = fragment(&single, size);
            let hello = tls(sniff(&split));
            assert_eq!(hello.sni.as_deref(), Some("multi.example.test"), "{size}");
            assert_eq!(hello.alpn, vec![b"h2".to_vec()]);
            for n in 0..split.len() {
                assert_eq!(sniff(&split[..n]), SniffStatus::NeedMore, "{size}/{n}");
            }
        }
    }

    #[test]
    fn a_hello_without_a_name_or_alpn() {
        let bytes = client_hello_bytes("127.0.0.1", &[]);
        let hello = tls(sniff(&bytes));
        assert_eq!(hello.sni, None);
        assert!(hello.alpn.is_empty());
        assert!(hello.complete);
    }

    #[test]
    fn names_are_validated_and_ambiguity_drops_them() {
        let ok = hello_with_extensions(&[(EXT_SERVER_NAME, sni_ext(&[(0, b"API.Example.TEST")]))]);
        assert_eq!(tls(sniff(&ok)).sni.as_deref(), Some("api.example.test"));
        for bad in [
            &b"bad name"[..],
            b"a..b",
            b"trailing.",
            b"caf\xc3\xa9.test",
            b"",
        ] {
            let h = tls(sniff(&hello_with_extensions(&[(
                EXT_SERVER_NAME,
                sni_ext(&[(0, bad)]),
            )])));
            assert_eq!(h.sni, None, "{bad:?}");
            assert!(h.complete);
        }
        let two_names =
            hello_with_extensions(&[(EXT_SERVER_NAME, sni_ext(&[(0, b"a.test"), (0, b"b.test")]))]);
        let h = tls(sniff(&two_names));
        assert_eq!((h.sni, h.complete), (None, false));
        let two_exts = hello_with_extensions(&[
            (EXT_SERVER_NAME, sni_ext(&[(0, b"a.test")])),
            (EXT_SERVER_NAME, sni_ext(&[(0, b"b.test")])),
        ]);
        let h = tls(sniff(&two_exts));
        assert_eq!((h.sni, h.complete), (None, false));
        let other_type = hello_with_extensions(&[(EXT_SERVER_NAME, sni_ext(&[(1, b"x")]))]);
        assert_eq!(tls(sniff(&other_type)).sni, None);
        let ech = hello_with_extensions(&[
            (EXT_SERVER_NAME, sni_ext(&[(0, b"public.test")])),
            (EXT_ENCRYPTED_CLIENT_HELLO, vec![0]),
        ]);
        let h = tls(sniff(&ech));
        assert!(h.ech && h.sni.as_deref() == Some("public.test"));
    }

    #[test]
    fn malformed_hellos_are_tls_without_a_name() {
        let good = hello_with_extensions(&[(EXT_SERVER_NAME, sni_ext(&[(0, b"a.test")]))]);
        // Extensions length one longer than present, with the record lengths
        // adjusted so the message is "whole".
        let mut bad = good.clone();
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        bad[ext_len_at + 1] += 1;
        let h = tls(sniff(&bad));
        assert_eq!((h.sni, h.complete), (None, false));
        // A hello that cannot fit in the sniffing budget: decided at once.
        let mut huge = vec![
            CONTENT_HANDSHAKE,
            0x03,
            0x01,
            0x40,
            0x00,
            1,
            0x01,
            0x00,
            0x00,
        ];
        huge.resize(64, 0);
        assert!(!tls(sniff(&huge)).complete);
        // A record that is not a handshake in the middle of the hello.
        let mut split = fragment(&good, 10);
        split[15] = 0x17;
        assert!(!tls(sniff(&split)).complete);
    }

    #[test]
    fn mutated_hellos_never_panic() {
        let bytes = client_hello_bytes("example.test", &[b"h2", b"http/1.1"]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut m = bytes.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            let cut = (next() as usize) % (m.len() + 1);
            let m = &m[..cut];
            let _ = sniff(m);
            let _ = sniff_final(m);
        }
        for len in [0usize, 1, 5, 6, 7, 100, 4096, SNIFF_MAX_BYTES + 10] {
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = sniff(&random);
            let _ = sniff_final(&random);
        }
    }

    #[test]
    fn http1_methods_and_their_prefixes() {
        for m in HTTP1_METHODS {
            let mut line = m.to_vec();
            line.extend_from_slice(b" /v1/messages HTTP/1.1\r\n");
            assert_eq!(sniff(&line), SniffStatus::Done(Sniffed::Http1));
            for n in 0..=m.len() {
                assert_eq!(sniff(&line[..n]), SniffStatus::NeedMore, "{:?}", &line[..n]);
            }
            assert_eq!(
                sniff(&line[..m.len() + 1]),
                SniffStatus::Done(Sniffed::Http1)
            );
        }
        for opaque in [
            &b"get / HTTP/1.1"[..],
            b"GETX",
            b"POSTED",
            b"BREW /",
            b"GET\t/",
        ] {
            assert_eq!(
                sniff(opaque),
                SniffStatus::Done(Sniffed::Opaque),
                "{opaque:?}"
            );
        }
        assert_eq!(sniff_final(b"GE"), Sniffed::Opaque);
    }

    #[test]
    fn the_h2_preface_and_its_prefixes() {
        assert_eq!(
            sniff(H2_PREFACE),
            SniffStatus::Done(Sniffed::Http2PriorKnowledge)
        );
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(
            sniff(&with_settings),
            SniffStatus::Done(Sniffed::Http2PriorKnowledge)
        );
        for n in 0..H2_PREFACE.len() {
            assert_eq!(sniff(&H2_PREFACE[..n]), SniffStatus::NeedMore, "{n}");
        }
        assert_eq!(
            sniff(b"PRI * HTTP/1.1\r\n"),
            SniffStatus::Done(Sniffed::Opaque)
        );
        // "P" and "PU" may still be PUT.
        assert_eq!(sniff(b"PUT "), SniffStatus::Done(Sniffed::Http1));
        assert_eq!(sniff(b"PA"), SniffStatus::NeedMore);
    }

    #[test]
    fn other_protocols_are_opaque() {
        for other in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"\x00\x00\x00\x01",
            b"\x16\x02\x00",
            b"\x16\x03\x01\x00\x00",
            b"\x16\x03\x01\x02\x00\x02",
            b"\x16\x03\x31",
            b"\x17\x03\x03\x00\x10",
            b"*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(
                sniff(other),
                SniffStatus::Done(Sniffed::Opaque),
                "{other:?}"
            );
        }
        assert_eq!(sniff(b""), SniffStatus::NeedMore);
    }
}
