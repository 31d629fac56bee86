//! Opaque TCP: the L4 decision, the relay to the original destination, and
//! what is recorded when there is none or it cannot be reached.
use super::*;
use crate::records::Verdict;

#[tokio::test]
async fn forwards_to_the_original_destination_and_records_who() {
    let upstream = echo_server().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let mut client = governed_client(&f, upstream).await;
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"ping");
    let records = wait_records(&f.records, 1).await;
    let r = &records[0];
    assert_eq!(r.verdict, Verdict::Forwarded);
    assert_eq!(r.agent.as_deref(), Some("bot"));
    assert_eq!(
        (r.pid, r.uid, r.cgroup_id, r.governing_cgroup_id),
        (4242, 1000, 8, 7)
    );
    assert_eq!(
        r.original_destination.as_deref(),
        Some(upstream.to_string().as_str())
    );
    assert_eq!((r.bytes_to_upstream, r.bytes_to_client), (4, 4));
    assert!(
        f.maps.peers.lock().unwrap().is_empty(),
        "the entry is consumed"
    );
}

#[tokio::test]
async fn refused_egress_closes_the_connection_and_says_why() {
    let upstream = echo_server().await;
    let f = fixture(&policy_allowing("127.0.0.9:1")).await;
    let mut client = governed_client(&f, upstream).await;
    let mut buf = [0u8; 8];
    let n = client.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let records = wait_records(&f.records, 1).await;
    assert_eq!(records[0].verdict, Verdict::RefusedPolicy);
    assert_eq!(records[0].rule.as_deref(), Some("egress.default"));
}

#[tokio::test]
async fn a_connection_without_a_kernel_record_is_never_dialled() {
    let f = fixture(&policy_allowing("*")).await;
    let mut client = TcpStream::connect(f.listen).await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0);
    let records = wait_records(&f.records, 1).await;
    assert_eq!(records[0].verdict, Verdict::NoOriginalDestination);
    assert!(records[0].original_destination.is_none());
}

#[tokio::test]
async fn an_unreachable_destination_is_reset_and_recorded() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let f = fixture(&policy_allowing(&closed.to_string())).await;
    let mut client = governed_client(&f, closed).await;
    let mut buf = [0u8; 8];
    assert!(matches!(client.read(&mut buf).await, Ok(0) | Err(_)));
    let records = wait_records(&f.records, 1).await;
    assert_eq!(records[0].verdict, Verdict::UpstreamFailed);
    assert!(
        records[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("refused"),
        "{:?}",
        records[0]
    );
}
