//! Requests shaped to slip past the decision: each must be refused (or
//! classified by what it is) and recorded, never forwarded undecided.
use super::*;
use crate::records::Verdict;

const REPLY: &str = r#"{"jsonrpc":"2.0","id":41,"result":{"exfiltrated":"secret"}}"#;

#[tokio::test]
async fn a_reply_to_no_request_the_server_sent_is_refused() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    for headers in [
        "",
        "mcp-session-id: s-1\r\nmcp-protocol-version: 2025-06-18\r\n",
    ] {
        let resp = exchange(&f, upstream, &post("/mcp", REPLY, headers)).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        // The refusal answers the reply's id, so a client can match it.
        assert!(resp.contains(r#""id":41"#), "{resp}");
        assert!(resp.contains("mcp.reply.unmatched"), "{resp}");
    }
    let refused: Vec<_> = wait_records(&f.records, 2)
        .await
        .into_iter()
        .filter(|r| r.rule.as_deref() == Some("mcp.reply.unmatched"))
        .collect();
    assert_eq!(refused.len(), 2, "{:?}", f.records.tail(10));
    assert!(refused.iter().all(|r| r.verdict == Verdict::RefusedPolicy));
}

#[tokio::test]
async fn a_reply_is_held_to_egress_like_any_request() {
    let upstream = mcp_upstream().await;
    // Egress allows somewhere else only.
    let f = fixture(&policy_allowing("127.0.0.9:1")).await;
    let resp = exchange(&f, upstream, &post("/mcp", REPLY, "")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.verdict, Verdict::RefusedPolicy);
    assert!(
        r.rule.as_deref().is_some_and(|r| r.starts_with("egress")),
        "{r:?}"
    );
}

/// Sends `first`, waits past the sniff timeouts, then the rest; returns what
/// the client got back.
async fn send_with_pause(f: &Fixture, dst: SocketAddr, first: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut client = governed_client(f, dst).await;
    client.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = client.write_all(rest).await;
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn pausing_before_or_inside_a_request_to_an_mcp_server_does_not_make_it_opaque() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_mcp_server(&upstream.to_string())).await;
    let delete = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete","arguments":{}}}"#;
    let request = post("/mcp", delete, "");
    let (head, tail) = request.as_bytes().split_at(3);
    // Silent first, and a three-byte prefix then a pause: both would have
    // been relayed as opaque bytes, the denied tool with them.
    for (first, rest) in [(&b""[..], request.as_bytes()), (head, tail)] {
        let got = send_with_pause(&f, upstream, first, rest).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            !got.contains(r#""text":"5""#),
            "the call was forwarded: {got}"
        );
    }
    let records = wait_records(&f.records, 2).await;
    let unreadable: Vec<_> = records
        .iter()
        .filter(|r| r.rule.as_deref() == Some(crate::proxy::RULE_L7_UNREADABLE))
        .collect();
    assert_eq!(unreadable.len(), 2, "{records:?}");
    assert!(unreadable
        .iter()
        .all(|r| r.verdict == Verdict::RefusedPolicy && r.reason.is_some()));
}

#[tokio::test]
async fn a_request_that_pauses_within_the_l7_wait_is_still_decided() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_mcp_server(&upstream.to_string())).await;
    // Past the plain sniff timeout (50 ms) but within the L7 wait (200 ms):
    // read as HTTP, and the denied tool is refused by its rule.
    let delete = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete","arguments":{}}}"#;
    let request = post("/mcp", delete, "");
    let mut client = governed_client(&f, upstream).await;
    client.write_all(&request.as_bytes()[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(&request.as_bytes()[3..]).await.unwrap();
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("-32001") && out.contains("deny"), "{out}");
}

#[tokio::test]
async fn tls_the_mesh_does_not_terminate_is_refused_to_an_mcp_server() {
    let upstream = echo_server().await;
    let f = fixture(&policy_with_mcp_server(&upstream.to_string())).await;
    let mut client = governed_client(&f, upstream).await;
    // A real ClientHello for a name the policy does not terminate.
    let hello = crate::proxy::sniff::tests::client_hello_bytes("tools.example", &[]);
    client.write_all(&hello).await.unwrap();
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out).await;
    assert!(out.is_empty(), "the hello was relayed: {out:?}");
    let r = wait_records(&f.records, 1).await.remove(0);
    assert_eq!(r.verdict, Verdict::RefusedPolicy);
    assert_eq!(r.rule.as_deref(), Some(crate::proxy::RULE_TLS_UNREAD));
}

#[tokio::test]
async fn opaque_tcp_elsewhere_is_still_relayed_after_the_sniff_timeout() {
    let upstream = echo_server().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let mut client = governed_client(&f, upstream).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(b"\x00hello").await.unwrap();
    let mut buf = [0u8; 6];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00hello");
}

const DELETE: &str =
    r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete","arguments":{}}}"#;

#[tokio::test]
async fn a_json_rpc_call_sent_as_another_content_type_is_still_decided() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_mcp_server(&upstream.to_string())).await;
    for ct in [
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    ] {
        let request = post("/mcp", &format!("\r\n {DELETE}"), "").replace(
            "content-type: application/json",
            &format!("content-type: {ct}"),
        );
        let resp = exchange(&f, upstream, &request).await;
        assert!(
            resp.contains("-32001") && resp.contains("deny"),
            "{ct}: the denied tool was not refused: {resp}"
        );
    }
    // Whitespace past the inspection limit (1 KiB here) before the call
    // does not hide it: refused, not passed unread.
    let padded = format!("{}{DELETE}", " ".repeat(2000));
    let request = post("/mcp", &padded, "").replace("application/json", "text/plain");
    let resp = exchange(&f, upstream, &request).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // A body that is not JSON still streams through as plain HTTP.
    let form = post("/mcp", "a=1", "").replace("application/json", "text/plain");
    let resp = exchange(&f, upstream, &form).await;
    assert!(!resp.contains("-32001"), "{resp}");
}

#[tokio::test]
async fn a_compressed_request_body_is_refused_not_forwarded_unread() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_mcp_server(&upstream.to_string())).await;
    for coding in ["gzip", "br", "identity, zstd"] {
        let request = post("/mcp", DELETE, &format!("content-encoding: {coding}\r\n"));
        let resp = exchange(&f, upstream, &request).await;
        assert!(resp.starts_with("HTTP/1.1 415"), "{coding}: {resp}");
        assert!(resp.contains("l7.content_encoding"), "{resp}");
    }
    let r = call_record(&f).await;
    assert_eq!(r.verdict, Verdict::Malformed);
    assert_eq!(r.rule.as_deref(), Some("l7.content_encoding"));
}

#[tokio::test]
async fn paths_are_matched_in_the_form_the_server_routes() {
    let upstream = mcp_upstream().await;
    // Only /mcp on this server is declared; everything else on it is refused.
    let policy = policy_with_mcp_server(&format!("{upstream}/mcp")).replacen(
        &format!("\"{upstream}/mcp\"]"),
        &format!("\"{upstream}\"]"),
        1,
    );
    let f = fixture(&policy).await;
    let read =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read","arguments":{}}}"#;
    let ok = exchange(&f, upstream, &post("/mcp", read, "")).await;
    assert!(ok.contains(r#""text":"5""#), "{ok}");
    // `/mcp/../admin` is `/admin` to the server: not the declared endpoint.
    for path in ["/mcp/../admin", "/mcp/%2e%2E/admin", "/mcp/./../admin"] {
        let resp = exchange(&f, upstream, &post(path, read, "")).await;
        assert!(
            resp.contains("-32001") && resp.contains("mcp.undeclared"),
            "{path}: {resp}"
        );
    }
    // Spellings servers read differently are refused outright.
    for path in ["/mcp%2F..%2Fadmin", "/mcp/a%5c..", "/mcp%00"] {
        let resp = exchange(&f, upstream, &post(path, read, "")).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
    }
}

/// An MCP-like upstream on another loopback address than `tools.example`'s
/// (the fixture's hosts map binds that name to 127.0.0.1 only).
async fn upstream_on(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_name_decides_only_where_it_resolves() {
    let bound = upstream_on("127.0.0.1").await;
    let elsewhere = upstream_on("127.0.0.3").await;
    // Egress by name only, on both ports.
    let policy = format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: bot\negress:\n  \
         allow: [\"tools.example:{}\", \"tools.example:{}\"]\n",
        bound.port(),
        elsewhere.port()
    );
    let f = fixture(&policy).await;
    let get = "GET / HTTP/1.1\r\nhost: tools.example\r\nconnection: close\r\n\r\n";
    let ok = exchange(&f, bound, get).await;
    assert!(ok.ends_with("reached"), "{ok}");
    // The same name sent to an address it does not resolve to.
    let spoofed = exchange(&f, elsewhere, get).await;
    assert!(spoofed.starts_with("HTTP/1.1 403"), "{spoofed}");
    assert!(spoofed.contains("egress.name_unbound"), "{spoofed}");
    let r = call_record(&f).await;
    let refused = f
        .records
        .tail(10)
        .into_iter()
        .find(|r| r.rule.as_deref() == Some("egress.name_unbound"))
        .unwrap_or_else(|| panic!("not recorded: {r:?}"));
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("127.0.0.3")),
        "{refused:?}"
    );
}
