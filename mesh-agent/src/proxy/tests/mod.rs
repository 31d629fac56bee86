//! The proxy's logic over in-memory maps: no root, no BPF. Black-box: a
//! [`Proxy`] serving on loopback, clients whose kernel record is written into
//! the in-memory maps as sock_ops would, and real upstream servers; by
//! subject in the sibling files.
mod accounting;
mod budget;
mod bypass;
mod http_mcp;
mod http_stream;
mod limits;
mod opaque;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_common::{agent_id, CgroupTag};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};

use crate::{
    addr::ClientAddr,
    bpf::maps::MemoryMaps,
    budget::{Ledger, SystemClock},
    metrics::Metrics,
    policy::{PolicySet, PolicyStore},
    proxy::{L7Settings, Proxy, ProxyParts},
    records::{ConnectionRecord, RecordLog},
    state::{CgroupLayout, Governor},
};

struct Fixture {
    maps: Arc<MemoryMaps>,
    records: Arc<RecordLog>,
    policies: Arc<PolicyStore>,
    ledger: Arc<Ledger>,
    listen: SocketAddr,
    limits: Arc<crate::proxy::AgentLimits>,
    _shutdown: watch::Sender<bool>,
}

impl Fixture {
    /// What `agent` holds in the proxy: (connections, requests in flight).
    fn proxy_limits_held(&self, agent: &str) -> (usize, usize) {
        self.limits.held(agent)
    }
}

async fn fixture(policy: &str) -> Fixture {
    fixture_files(&[("p.yaml", policy.to_owned())]).await
}

/// Agents the fixture's kernel maps know, by governing cgroup id.
const AGENTS: [(u64, &str); 2] = [(7, "bot"), (9, "other")];

async fn fixture_files(files: &[(&str, String)]) -> Fixture {
    let maps = Arc::new(MemoryMaps::default());
    for (cgroup, agent) in AGENTS {
        let mut name = [0u8; mesh_common::AGENT_NAME_MAX];
        name[..agent.len()].copy_from_slice(agent.as_bytes());
        maps.tags.lock().unwrap().insert(
            cgroup,
            CgroupTag {
                agent_id: agent_id(agent.as_bytes()),
                flags: 0,
                agent_name: name,
            },
        );
    }
    let layout = CgroupLayout {
        cgroup_root: "/nonexistent".into(),
        attach_cgroup: "/nonexistent/a".into(),
        parent_cgroup: "/nonexistent/a/p".into(),
    };
    let governor = Arc::new(Governor::new(maps.clone(), layout).unwrap());
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, p)| ((*n).to_owned(), p.clone()))
        .collect();
    let policy = PolicySet::from_files(&files).unwrap();
    let records = Arc::new(RecordLog::new(16));
    let policies = Arc::new(PolicyStore::new(policy));
    let ledger = Arc::new(Ledger::in_memory(Arc::new(SystemClock)));
    let proxy = Arc::new(Proxy::new(ProxyParts {
        governor,
        orig_dst: maps.clone(),
        policies: policies.clone(),
        records: records.clone(),
        metrics: Arc::new(Metrics::new(None, None)),
        ledger: ledger.clone(),
        upstream_mark: None,
        l7: L7Settings {
            body_limit: 1024,
            sniff_timeout: Duration::from_millis(50),
            l7_sniff_timeout: Duration::from_millis(200),
            header_read_timeout: Duration::from_secs(2),
            limits: crate::proxy::Limits {
                connections_per_agent: 8,
                requests_per_agent: 4,
            },
        },
        mesh_ca: None,
        names: Arc::new(crate::names::Names::new(
            std::collections::HashMap::from([(
                "tools.example".to_owned(),
                vec!["127.0.0.1".parse().unwrap()],
            )]),
            Arc::new(crate::names::SystemResolver),
        )),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let limits = proxy.limits.clone();
    tokio::spawn(proxy.serve(listener, rx));
    Fixture {
        maps,
        records,
        policies,
        ledger,
        listen,
        limits,
        _shutdown: tx,
    }
}

/// A client socket whose address is recorded, as sock_ops would, before it connects.
async fn governed_client(f: &Fixture, dst: SocketAddr) -> TcpStream {
    governed_client_as(f, dst, "bot").await
}

/// [`governed_client`] for one of [`AGENTS`].
async fn governed_client_as(f: &Fixture, dst: SocketAddr, agent: &str) -> TcpStream {
    let governing = AGENTS
        .iter()
        .find(|(_, a)| *a == agent)
        .map(|(c, _)| *c)
        .expect("a fixture agent");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let local = ClientAddr(socket.local_addr().unwrap());
    let ip = match dst.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    f.maps.peers.lock().unwrap().insert(
        local.peer_key(),
        mesh_common::OrigDst {
            addr: crate::addr::ip6_words(ip),
            port: dst.port(),
            family: 2,
            agent_id: agent_id(agent.as_bytes()),
            cgroup_id: governing + 1,
            governing_cgroup_id: governing,
            tgid: 4242,
            uid: 1000,
        },
    );
    socket.connect(f.listen).await.unwrap()
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn wait_records(records: &RecordLog, n: usize) -> Vec<ConnectionRecord> {
    for _ in 0..200 {
        let got = records.tail(100);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    records.tail(100)
}

fn policy_allowing(dst: &str) -> String {
    policy_of("bot", dst)
}

fn policy_of(agent: &str, dst: &str) -> String {
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: {agent}\negress:\n  allow: [\"{dst}\"]\n"
    )
}

/// Egress to `dst`, which is also declared as an MCP server whose `delete`
/// tool is denied.
fn policy_with_mcp_server(dst: &str) -> String {
    format!(
        "{}mcp:\n  - server: tools\n    address: \"{dst}\"\n    tools:\n      \
         read: [\"*\"]\n      deny: [\"delete\"]\n    grant: [read]\n",
        policy_allowing(dst)
    )
}

/// An HTTP/1.1 upstream answering every POST like an MCP server would:
/// JSON for requests, or an SSE stream when the path is `/sse-answer`.
async fn mcp_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let sse = req.uri().path() == "/sse-answer";
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let reply = serde_json::json!({"jsonrpc":"2.0","id":v["id"],
                        "result":{"content":[{"type":"text","text":"5"}],"isError":false}});
                    let (ct, text) = if sse {
                        (
                            "text/event-stream",
                            format!("id: p1\ndata:\n\nevent: message\ndata: {reply}\n\n"),
                        )
                    } else {
                        ("application/json", reply.to_string())
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", ct)
                            .body(http_body_util::Full::new(Bytes::from(text)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: tools.example\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn exchange(f: &Fixture, dst: SocketAddr, request: &str) -> String {
    let mut client = governed_client(f, dst).await;
    client.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn call_record(f: &Fixture) -> ConnectionRecord {
    for _ in 0..200 {
        if let Some(r) = f.records.tail(100).into_iter().find(|r| r.call.is_some()) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no call record in {:?}", f.records.tail(100));
}

const TOOLS_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;

/// A raw upstream: reads one request head, writes `reply`, then echoes
/// (when `echo`) or closes.
async fn raw_upstream(reply: &'static [u8], echo: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                // The request may carry a body: for these tests, small.
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), s.read(&mut [0u8; 4096])).await;
                s.write_all(reply).await.unwrap();
                if echo {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}
