//! One agent flooding the proxy hits its own bounds and is refused with a
//! reason, while another agent is still served.
use super::*;
use crate::records::Verdict;

/// An upstream that accepts, reads, and never answers.
async fn silent_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_flood_of_connections_is_bounded_per_agent_and_spares_the_others() {
    let upstream = echo_server().await;
    let dst = upstream.to_string();
    let f = fixture_files(&[
        ("bot.yaml", policy_of("bot", &dst)),
        ("other.yaml", policy_of("other", &dst)),
    ])
    .await;
    // The fixture's bound is 8 connections per agent; each open one is
    // relayed (echoed) so it surely holds its slot.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = governed_client(&f, upstream).await;
        c.write_all(b"\x00hold").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        held.push(c);
    }
    let mut ninth = governed_client(&f, upstream).await;
    let _ = ninth.write_all(b"\x00more").await;
    let mut out = Vec::new();
    let _ = ninth.read_to_end(&mut out).await;
    assert!(out.is_empty(), "a connection past the bound was relayed");
    let refused = wait_records(&f.records, 1)
        .await
        .into_iter()
        .find(|r| r.rule.as_deref() == Some("limits.connections"))
        .expect("the refusal is recorded");
    assert_eq!(refused.verdict, Verdict::RefusedPolicy);
    assert_eq!(refused.agent.as_deref(), Some("bot"));

    // Another agent is served meanwhile.
    let mut other = governed_client_as(&f, upstream, "other").await;
    other.write_all(b"\x00mine").await.unwrap();
    let mut buf = [0u8; 5];
    other.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00mine");

    // A closed connection gives its slot back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = governed_client(&f, upstream).await;
    again.write_all(b"\x00back").await.unwrap();
    again.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00back");
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_agent() {
    let upstream = silent_upstream().await;
    let dst = upstream.to_string();
    let f = fixture_files(&[
        ("bot.yaml", policy_of("bot", &dst)),
        ("other.yaml", policy_of("other", &dst)),
    ])
    .await;
    let get = "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n";
    // The fixture's bound is 4 in flight: four requests that never get an
    // answer hold them all.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut c = governed_client(&f, upstream).await;
        c.write_all(get.as_bytes()).await.unwrap();
        waiting.push(c);
    }
    for _ in 0..100 {
        if f.proxy_limits_held("bot").1 == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = exchange(
        &f,
        upstream,
        "GET /more HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(resp.contains("limits.requests"), "{resp}");
    // The other agent's request is not refused for it (it waits on the
    // silent upstream like any other: the proxy took it).
    let mut other = governed_client_as(&f, upstream, "other").await;
    other.write_all(get.as_bytes()).await.unwrap();
    for _ in 0..100 {
        if f.proxy_limits_held("other").1 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.proxy_limits_held("other").1, 1);
    drop(waiting);
}
