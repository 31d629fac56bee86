//! L7 edge cases end to end (root, real kernel, real cgroups): TLS
//! terminated with the mesh CA towards a server that has its own CA, TLS
//! passed through untouched (SNI recorded and decided on), and malformed
//! requests answered with the specified HTTP status and JSON-RPC code, never
//! forwarded, while the same daemon keeps serving other connections.
//!
//! The servers are the test's own: python `http.server` (+ `ssl` with a CA
//! made by the openssl CLI) on 127.0.0.2/3, and the MCP SDK peer. The last
//! two tests guard defects found here (pool trust, early client close).
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use mesh_tests::{
    egress_policy, http_get,
    peers::{python_argv, spawn_server, PeerKind},
    stderr, stdout, Mesh,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// A test PKI and an HTTPS server that trusts nothing of the mesh's.

/// A CA of the test's own and a leaf for tools.test, other.test and
/// 127.0.0.2, made with the openssl CLI.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        stderr(&out)
    );
}

fn make_pki(dir: &Path) -> TestPki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=mesh l7_edge test upstream CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&dir, &ca);
    let mut csr = vec!["req", "-new", "-nodes"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=tools.test",
    ]);
    openssl(&dir, &csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:tools.test,DNS:other.test,IP:127.0.0.2\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("leaf.ext");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("leaf.pem"),
        key: dir.join("leaf.key"),
    }
}

/// An HTTPS server (python http.server + ssl, HTTP/1.1 only) on 127.0.0.2
/// that answers every POST with a JSON-RPC result echoing the tool's name
/// and arguments, and logs each request's body to its log file.
const TLS_SERVER_PY: &str = r#"
import http.server, json, ssl, sys
cert, key, host = sys.argv[1], sys.argv[2], sys.argv[3]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n)
        sys.stderr.write("REQUEST %s %s %s\n" % (self.command, self.path, body.decode("utf-8", "replace")))
        sys.stderr.flush()
        try:
            req = json.loads(body)
            params = req.get("params") or {}
            text = "tls echo %s %s" % (params.get("name"), json.dumps(params.get("arguments"), sort_keys=True))
            resp = {"jsonrpc": "2.0", "id": req.get("id"),
                    "result": {"content": [{"type": "text", "text": text}], "isError": False}}
        except Exception as e:
            resp = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": str(e)}}
        out = json.dumps(resp).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("LOG " + (fmt % args) + "\n")
        sys.stderr.flush()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
srv = http.server.ThreadingHTTPServer((host, 0), Handler)
srv.daemon_threads = True
# The handshake happens in the handler thread: a client that fails it does
# not hold up the others.
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A python server of the test's (on 127.0.0.2/3, printing `READY <port>`);
/// killed (by its pid) on drop.
struct PyServer {
    child: Child,
    ip: &'static str,
    port: u16,
    log: PathBuf,
}

impl PyServer {
    fn start(dir: &Path, name: &str, script_text: &str, args: &[&str]) -> PyServer {
        let script = dir.join(format!("{name}.py"));
        std::fs::write(&script, script_text).expect("server script");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("server log");
        let ip = if args.contains(&"127.0.0.3") {
            "127.0.0.3"
        } else {
            "127.0.0.2"
        };
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn a python test server");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("READY ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        // The guard exists before the wait, so a failed start kills it too.
        let mut server = PyServer {
            child,
            ip,
            port: 0,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => server.port = port,
            other => panic!(
                "python test server {name} not ready ({other:?}):\n{}",
                server.log_text()
            ),
        }
        server
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

type TlsServer = PyServer;

fn start_tls_server(dir: &Path, pki: &TestPki) -> TlsServer {
    let (cert, key) = (pki.cert.to_string_lossy(), pki.key.to_string_lossy());
    PyServer::start(
        dir,
        "tls_server",
        TLS_SERVER_PY,
        &[&cert, &key, "127.0.0.2"],
    )
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- python test server log ---\n{}", self.log_text());
        }
    }
}

fn tools_call(id: i64, name: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
    .to_string()
}

/// `curl` as `agent` through the mesh; stdout is the body, then a last line
/// `<http_code> <http_version>`.
fn curl(mesh: &Mesh, agent: &str, args: &[&str]) -> Output {
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-w",
        "\n%{http_code} %{http_version}",
    ];
    argv.extend_from_slice(args);
    mesh.exec(agent, &argv)
}

/// A JSON-RPC POST with the headers an MCP client sends.
fn post_args<'a>(url: &'a str, body: &'a str) -> Vec<&'a str> {
    vec![
        url,
        "-d",
        body,
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
    ]
}

/// (body, status, HTTP version) of a successful curl.
fn curl_ok(mesh: &Mesh, agent: &str, args: &[&str]) -> (Value, u16, String) {
    let out = curl(mesh, agent, args);
    assert!(
        out.status.success(),
        "curl {args:?} as {agent} failed:\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        stdout(&out),
        stderr(&out),
        mesh.daemon_log()
    );
    let text = stdout(&out);
    let (body, last) = text.rsplit_once('\n').expect("status line");
    let mut f = last.split_whitespace();
    let status: u16 = f.next().and_then(|s| s.parse().ok()).expect("status");
    let version = f.next().unwrap_or("").to_owned();
    let body: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("curl body is not JSON ({e}): {text}"));
    (body, status, version)
}

/// Waits (bounded) until a record satisfies `pred` and returns it.
fn record_where(mesh: &Mesh, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let records = mesh.records_until(&pred);
    records
        .iter()
        .find(|r| pred(r))
        .cloned()
        .unwrap_or_else(|| panic!("no record {what} in {records:#?}"))
}

fn policy_with_tls(agent: &str, dst: &str, upstream_ca: Option<&Path>) -> String {
    let mut p = format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [\"{dst}\"]\n\
         tls:\n  terminate: [\"{dst}\"]\n"
    );
    if let Some(ca) = upstream_ca {
        p.push_str(&format!("  upstream_ca: \"{}\"\n", ca.display()));
    }
    p
}

// ---------------------------------------------------------------------------
// 1. TLS terminate.

/// `tlsnoca` (terminate, no upstream_ca) calls through the mesh: the mesh
/// must not trust the test server (system roots only), so 502 and the call
/// never reaches it.
fn assert_untrusted_upstream_refused(mesh: &Mesh, server: &TlsServer, id: i64, http: &str) {
    let mesh_ca = mesh.dir.join("data/ca/mesh-ca.pem");
    let mesh_ca = mesh_ca.to_string_lossy().into_owned();
    let resolve = format!("tools.test:{}:127.0.0.2", server.port);
    let url = format!("https://tools.test:{}/mcp", server.port);
    let requests_before = server.log_text().matches("REQUEST ").count();
    let body = tools_call(id, "add", json!({"a": 6, "b": 7}));
    let mut a = vec![http, "--cacert", &mesh_ca, "--resolve", &resolve];
    a.extend(post_args(&url, &body));
    let out = curl(mesh, "tlsnoca", &a);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{}", text, stderr(&out));
    let code = text.rsplit('\n').next().unwrap_or("");
    assert!(
        code.starts_with("502 "),
        "tlsnoca's policy trusts only the system roots upstream, yet: {text}"
    );
    let r = record_where(mesh, "of the untrusted upstream", |r| {
        r["agent"] == "tlsnoca" && r["call"]["jsonrpc_id"] == id
    });
    assert_eq!(r["verdict"], "upstream_failed", "{r:#?}");
    assert_eq!(r["call"]["http_status"], 502, "{r:#?}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("certificate"),
        "{r:#?}"
    );
    assert_eq!(
        server.log_text().matches("REQUEST ").count(),
        requests_before,
        "{}",
        server.log_text()
    );
}

/// A mesh with agents `tlsterm` (terminate, upstream_ca = the test CA) and
/// `tlsnoca` (terminate, no upstream_ca) and the HTTPS server they call.
fn terminate_setup(name: &str) -> (Mesh, TestPki, TlsServer) {
    let mut mesh = Mesh::new(name, &[]);
    let pki = make_pki(&mesh.dir);
    let server = start_tls_server(&mesh.dir, &pki);
    let dst = server.addr();
    std::fs::write(
        mesh.policy_dir.join("term.yaml"),
        policy_with_tls("tlsterm", &dst, Some(&pki.ca)),
    )
    .expect("policy");
    std::fs::write(
        mesh.policy_dir.join("noca.yaml"),
        policy_with_tls("tlsnoca", &dst, None),
    )
    .expect("policy");
    mesh.start_daemon();
    (mesh, pki, server)
}

#[test]
fn tls_terminate_sees_the_mcp_call_inside_and_verifies_the_upstream_with_its_ca() {
    let (mesh, pki, server) = terminate_setup("tlsterm");
    let dst = server.addr();
    // First, while no upstream connection is pooled: the agent whose policy
    // has no upstream_ca does not get to the server.
    assert_untrusted_upstream_refused(&mesh, &server, 10, "--http2");
    let mesh_ca = mesh.dir.join("data/ca/mesh-ca.pem");
    assert!(mesh_ca.exists(), "{} missing", mesh_ca.display());
    let mesh_ca = mesh_ca.to_string_lossy().into_owned();
    let test_ca = pki.ca.to_string_lossy().into_owned();
    let resolve = format!("tools.test:{}:127.0.0.2", server.port);
    let url = format!("https://tools.test:{}/mcp", server.port);

    // HTTP/1.1 and HTTP/2 (ALPN with the mesh; the server speaks only 1.1).
    let cases = [
        ("--http1.1", 7, json!({"a": 2, "b": 3}), "1.1"),
        ("--http2", 8, json!({"a": 4, "b": 5}), "2"),
    ];
    for (flag, id, args, version) in &cases {
        let body = tools_call(*id, "add", args.clone());
        let mut a = vec![flag, "--cacert", &mesh_ca, "--resolve", &resolve];
        a.extend(post_args(&url, &body));
        let (resp, status, got_version) = curl_ok(&mesh, "tlsterm", &a);
        assert_eq!(status, 200, "{resp}");
        assert_eq!(&got_version, version, "{flag}: {resp}");
        assert_eq!(resp["id"], *id, "{resp}");
        // Python's json.dumps with sort_keys: `{"a": 2, "b": 3}`.
        let expected = format!(
            "tls echo add {{\"a\": {}, \"b\": {}}}",
            args["a"], args["b"]
        );
        assert_eq!(
            resp["result"]["content"][0]["text"], expected,
            "{flag}: {resp}"
        );
        // The server got the call as the agent sent it.
        assert!(
            server
                .log_text()
                .contains(&format!("REQUEST POST /mcp {body}")),
            "{flag}: {}",
            server.log_text()
        );
    }
    for (flag, id, args, _) in &cases {
        let r = record_where(&mesh, &format!("of call {id}"), |r| {
            r["agent"] == "tlsterm" && r["call"]["jsonrpc_id"] == *id
        });
        assert_eq!(r["verdict"], "forwarded", "{flag}: {r:#?}");
        assert_eq!(r["protocol"], "mcp", "{flag}: {r:#?}");
        assert_eq!(r["server_name"], "tools.test", "{flag}: {r:#?}");
        assert_eq!(r["original_destination"], dst.as_str(), "{flag}: {r:#?}");
        let call = &r["call"];
        assert_eq!(call["method"], "tools/call", "{flag}: {r:#?}");
        assert_eq!(call["name"], "add", "{flag}: {r:#?}");
        assert_eq!(call["arguments"], *args, "{flag}: {r:#?}");
        assert_eq!(call["http_method"], "POST", "{flag}: {r:#?}");
        assert_eq!(call["path"], "/mcp", "{flag}: {r:#?}");
        assert_eq!(call["http_status"], 200, "{flag}: {r:#?}");
        assert_eq!(call["outcome"], "result", "{flag}: {r:#?}");
    }

    // An agent that trusts only the server's CA, not the mesh's: its
    // handshake with the mesh fails, and nothing reaches the server.
    let requests_before = server.log_text().matches("REQUEST ").count();
    let body = tools_call(9, "add", json!({"a": 1, "b": 1}));
    let mut a = vec!["--cacert", &test_ca, "--resolve", &resolve];
    a.extend(post_args(&url, &body));
    let out = curl(&mesh, "tlsterm", &a);
    assert!(
        !out.status.success(),
        "a client not trusting the mesh CA got through: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("SSL certificate problem"),
        "{}",
        stderr(&out)
    );
    let r = record_where(&mesh, "of the failed handshake", |r| {
        r["agent"] == "tlsterm" && r["verdict"] == "upstream_failed"
    });
    assert_eq!(r["rule"], "tls.terminate", "{r:#?}");
    assert_eq!(r["protocol"], "tls", "{r:#?}");
    assert_eq!(r["server_name"], "tools.test", "{r:#?}");
    assert!(r["call"].is_null(), "{r:#?}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("TLS handshake with the agent failed"),
        "{r:#?}"
    );
    assert_eq!(
        server.log_text().matches("REQUEST ").count(),
        requests_before,
        "{}",
        server.log_text()
    );
}

/// The upstream pool is keyed by destination, TLS name and HTTP version,
/// not by the trust the connection was verified with: once `tlsterm` (whose
/// upstream_ca trusts the test CA) has a pooled connection, `tlsnoca` (no
/// upstream_ca) rides it to a server its policy does not trust.
#[test]
fn upstream_trust_is_not_shared_through_the_pool() {
    let (mesh, _pki, server) = terminate_setup("tlspool");
    let mesh_ca = mesh.dir.join("data/ca/mesh-ca.pem");
    let mesh_ca = mesh_ca.to_string_lossy().into_owned();
    let resolve = format!("tools.test:{}:127.0.0.2", server.port);
    let url = format!("https://tools.test:{}/mcp", server.port);
    for http in ["--http1.1", "--http2"] {
        let body = tools_call(1, "add", json!({"a": 2, "b": 3}));
        let mut a = vec![http, "--cacert", &mesh_ca, "--resolve", &resolve];
        a.extend(post_args(&url, &body));
        let (resp, status, _) = curl_ok(&mesh, "tlsterm", &a);
        assert_eq!(status, 200, "{resp}");
    }
    assert_untrusted_upstream_refused(&mesh, &server, 11, "--http2");
    assert_untrusted_upstream_refused(&mesh, &server, 12, "--http1.1");
}

// ---------------------------------------------------------------------------
// 2. TLS passthrough.

#[test]
fn tls_passthrough_leaves_the_bytes_alone_and_decides_on_the_sni() {
    let mut mesh = Mesh::new("tlspass", &[]);
    let pki = make_pki(&mesh.dir);
    let server = start_tls_server(&mesh.dir, &pki);
    let dst = server.addr();
    let by_name = format!("tools.test:{}", server.port);
    std::fs::write(
        mesh.policy_dir.join("pass.yaml"),
        egress_policy("tlspass", std::slice::from_ref(&dst)),
    )
    .expect("policy");
    // Allowed by DNS name only: the SNI decides.
    std::fs::write(
        mesh.policy_dir.join("name.yaml"),
        egress_policy("tlsname", std::slice::from_ref(&by_name)),
    )
    .expect("policy");
    // tools.test is the server's name (other.test is bound too: the
    // refusal below is by name, not by binding).
    mesh.set_hosts(&[("tools.test", "127.0.0.2"), ("other.test", "127.0.0.2")]);
    mesh.start_daemon();
    let mesh_ca = mesh.dir.join("data/ca/mesh-ca.pem");
    let mesh_ca = mesh_ca.to_string_lossy().into_owned();
    let test_ca = pki.ca.to_string_lossy().into_owned();
    let resolve = format!("tools.test:{}:127.0.0.2", server.port);
    let url = format!("https://tools.test:{}/mcp", server.port);

    // The server's own certificate reaches the client, which verifies it
    // against the test CA.
    let body = tools_call(21, "add", json!({"a": 2, "b": 3}));
    let mut a = vec!["--cacert", &test_ca, "--resolve", &resolve];
    a.extend(post_args(&url, &body));
    let (resp, status, _) = curl_ok(&mesh, "tlspass", &a);
    assert_eq!(status, 200);
    assert_eq!(resp["id"], 21, "{resp}");
    assert_eq!(
        resp["result"]["content"][0]["text"],
        "tls echo add {\"a\": 2, \"b\": 3}"
    );
    let r = record_where(&mesh, "of the passed-through connection", |r| {
        r["agent"] == "tlspass" && r["verdict"] == "forwarded"
    });
    assert_eq!(r["protocol"], "tls", "{r:#?}");
    assert_eq!(r["server_name"], "tools.test", "{r:#?}");
    assert_eq!(r["original_destination"], dst.as_str(), "{r:#?}");
    assert!(r["call"].is_null(), "not parsed: {r:#?}");
    assert!(r["bytes_to_upstream"].as_u64().unwrap_or(0) > 0, "{r:#?}");
    assert!(r["bytes_to_client"].as_u64().unwrap_or(0) > 0, "{r:#?}");

    // Nothing of the mesh's is in the way: a client trusting only the mesh
    // CA rejects the server's certificate.
    let out = curl(
        &mesh,
        "tlspass",
        &["--cacert", &mesh_ca, "--resolve", &resolve, &url],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("SSL certificate problem"),
        "{}",
        stderr(&out)
    );

    // Allowed by name: tools.test passes ...
    let body = tools_call(22, "add", json!({"a": 1, "b": 2}));
    let mut a = vec!["--cacert", &test_ca, "--resolve", &resolve];
    a.extend(post_args(&url, &body));
    let (resp, _, _) = curl_ok(&mesh, "tlsname", &a);
    assert_eq!(resp["id"], 22, "{resp}");
    let r = record_where(&mesh, "of the name-allowed connection", |r| {
        r["agent"] == "tlsname" && r["verdict"] == "forwarded"
    });
    assert_eq!(r["server_name"], "tools.test", "{r:#?}");
    // The name entry is the policy's only allow entry.
    assert_eq!(r["rule"], "egress.allow[0]", "{r:#?}");

    // ... another name for the same address does not: closed, recorded.
    let other_resolve = format!("other.test:{}:127.0.0.2", server.port);
    let other_url = format!("https://other.test:{}/mcp", server.port);
    let mut a = vec!["--cacert", &test_ca, "--resolve", &other_resolve];
    a.extend(post_args(&other_url, &body));
    let out = curl(&mesh, "tlsname", &a);
    assert!(
        !out.status.success(),
        "other.test got through: {}",
        stdout(&out)
    );
    let r = record_where(&mesh, "of the refused SNI", |r| {
        r["agent"] == "tlsname" && r["verdict"] == "refused_policy"
    });
    assert_eq!(r["server_name"], "other.test", "{r:#?}");
    assert_eq!(r["protocol"], "tls", "{r:#?}");
    assert_eq!(r["rule"], "egress.default", "{r:#?}");
    assert_eq!(r["bytes_to_upstream"], 0, "{r:#?}");
    // The same request outside the mesh works: the refusal was the mesh's.
    let mut direct = vec!["-sS", "--max-time", "30"];
    direct.extend_from_slice(&a);
    let out = Command::new("curl").args(&direct).output().expect("curl");
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------
// 3. Malformed input.

/// A raw client: sends the bytes of a file (all at once while reading, or
/// `--split N` bytes, then waits for the `--go` file before the rest), prints
/// what came back on stdout, and on stderr its local address (`LOCAL
/// ip:port`) and how the connection ended (`EOF`, `RECV <error>`, `STOPPED`).
/// `--half-close`: shut the write side once all is sent; `--stop-at S`:
/// close as soon as S has been received.
const RAW_CLIENT_PY: &str = r#"
import argparse, os, socket, sys, threading, time
p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("port", type=int); p.add_argument("path")
p.add_argument("--split", type=int, default=0); p.add_argument("--marker"); p.add_argument("--go")
p.add_argument("--half-close", action="store_true"); p.add_argument("--stop-at")
a = p.parse_args()
data = open(a.path, "rb").read()
s = socket.create_connection((a.host, a.port), timeout=60)
sys.stderr.write("LOCAL %s:%d\n" % s.getsockname())
sys.stderr.flush()

def send():
    try:
        if a.split:
            s.sendall(data[:a.split])
            open(a.marker, "w").close()
            deadline = time.time() + 120
            while not os.path.exists(a.go) and time.time() < deadline:
                time.sleep(0.02)
            s.sendall(data[a.split:])
        else:
            s.sendall(data)
        if a.half_close:
            s.shutdown(socket.SHUT_WR)
    except OSError as e:
        sys.stderr.write("SEND %s\n" % e)
        sys.stderr.flush()

threading.Thread(target=send, daemon=True).start()
out = bytearray()
try:
    while True:
        b = s.recv(65536)
        if not b:
            sys.stderr.write("EOF\n")
            break
        out += b
        if a.stop_at and a.stop_at.encode() in out:
            sys.stderr.write("STOPPED\n")
            s.close()
            break
except OSError as e:
    sys.stderr.write("RECV %s\n" % e)
sys.stdout.buffer.write(bytes(out))
sys.stdout.flush()
"#;

struct Raw {
    /// Everything the mesh sent back.
    bytes: Vec<u8>,
    /// The client's local port (the record's `client`).
    local_port: u16,
    stderr: String,
}

/// Sends `request` from a governed python3 to `dst` and reads until close.
fn raw_exchange(mesh: &Mesh, agent: &str, dst: &str, case: &str, request: &[u8]) -> Raw {
    raw_exchange_with(mesh, agent, dst, case, request, &[])
}

fn raw_client_script(mesh: &Mesh) -> PathBuf {
    let script = mesh.dir.join("raw_client.py");
    if !script.exists() {
        std::fs::write(&script, RAW_CLIENT_PY).expect("raw client");
    }
    script
}

fn raw_exchange_with(
    mesh: &Mesh,
    agent: &str,
    dst: &str,
    case: &str,
    request: &[u8],
    options: &[&str],
) -> Raw {
    let script = raw_client_script(mesh);
    let req = mesh.dir.join(format!("req-{case}"));
    std::fs::write(&req, request).expect("request file");
    let (host, port) = dst.rsplit_once(':').expect("host:port");
    let script = script.to_string_lossy().into_owned();
    let req = req.to_string_lossy().into_owned();
    let mut argv = vec!["python3", &script, host, port, &req];
    argv.extend_from_slice(options);
    let out = mesh.exec(agent, &argv);
    let err = stderr(&out);
    assert!(out.status.success(), "raw client ({case}) failed:\n{err}");
    let local_port = err
        .lines()
        .find_map(|l| l.strip_prefix("LOCAL "))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no LOCAL line ({case}):\n{err}"));
    assert!(
        !err.contains("timed out"),
        "({case}) the mesh neither answered nor closed:\n{err}"
    );
    Raw {
        bytes: out.stdout,
        local_port,
        stderr: err,
    }
}

/// An HTTP/1.1 response: status, head, body (content-length or to the end).
fn parse_h1(raw: &Raw, case: &str) -> (u16, String, Vec<u8>) {
    let text = String::from_utf8_lossy(&raw.bytes);
    let end = raw
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("({case}) no HTTP response: {text:?}\n{}", raw.stderr));
    let head = String::from_utf8_lossy(&raw.bytes[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("({case}) bad status line: {head}"));
    let rest = &raw.bytes[end + 4..];
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(rest.len())
        .min(rest.len());
    (status, head, rest[..len].to_vec())
}

/// Checks a malformed request's answer (status and JSON-RPC code) and its
/// record; returns the record.
fn assert_refused(
    mesh: &Mesh,
    dst: &str,
    case: &str,
    raw: &Raw,
    status: u16,
    code: i64,
    reason_has: &str,
) -> Value {
    let (got, head, body) = parse_h1(raw, case);
    assert_eq!(
        got,
        status,
        "({case}) {head}\n{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "({case}) {head}"
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "({case}) body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    assert_eq!(v["jsonrpc"], "2.0", "({case}) {v}");
    assert_eq!(v["error"]["code"], code, "({case}) {v}");
    let audit_id = v["error"]["data"]["audit_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("({case}) no audit_id: {v}"));
    let r = record_where(mesh, &format!("with id {audit_id} ({case})"), |r| {
        r["id"] == audit_id
    });
    assert_eq!(r["verdict"], "malformed", "({case}) {r:#?}");
    assert_eq!(r["rule"], "l7.parse", "({case}) {r:#?}");
    assert_eq!(r["original_destination"], dst, "({case}) {r:#?}");
    assert_eq!(r["call"]["http_status"], status, "({case}) {r:#?}");
    assert!(
        r["call"]["outcome"].is_null(),
        "({case}) never forwarded: {r:#?}"
    );
    assert!(
        r["client"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!(":{}", raw.local_port)),
        "({case}) {r:#?}"
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains(&reason_has.to_ascii_lowercase()),
        "({case}) reason should mention {reason_has:?}: {r:#?}"
    );
    r
}

fn post_raw(dst: &str, case: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /mcp?case={case} HTTP/1.1\r\nhost: {dst}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\n{extra_headers}\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn mcp_client_basic(mesh: &Mesh, agent: &str, url: &str) {
    let argv = python_argv(
        "mcp_client.py",
        &["--url", url, "--mode", "legacy", "--script", "basic"],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = mesh.exec(agent, &argv);
    assert!(
        out.status.success(),
        "valid MCP session failed:\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        stdout(&out),
        stderr(&out),
        mesh.daemon_log()
    );
    assert!(stdout(&out).contains("ada"), "{}", stdout(&out));
}

fn wait_for_file(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_requests_get_their_errors_and_the_daemon_keeps_serving() {
    let server = spawn_server(PeerKind::Mcp, "127.0.0.2", 0);
    let dst = server.addr().to_string();
    let agent = "l7bad";
    let mesh = Mesh::start(
        agent,
        &[("p.yaml", &egress_policy(agent, std::slice::from_ref(&dst)))],
    );
    let url = server.url();
    let add = tools_call(1, "add", json!({"a": 2, "b": 3}));

    // A request stalled halfway through its (truncated) body while a valid
    // session runs on other connections.
    let truncated_late =
        br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","argu"#;
    let stalled_req = post_raw(&dst, "stalled", "", truncated_late);
    let split = stalled_req.len() - truncated_late.len() / 2;
    let marker = mesh.dir.join("stalled.marker");
    let go = mesh.dir.join("stalled.go");
    let stalled = thread::scope(|s| {
        let h = s.spawn(|| {
            let split = split.to_string();
            let (marker, go) = (marker.to_string_lossy(), go.to_string_lossy());
            raw_exchange_with(
                &mesh,
                agent,
                &dst,
                "stalled",
                &stalled_req,
                &["--split", &split, "--marker", &marker, "--go", &go],
            )
        });
        // Release the stalled client whatever happens here.
        struct Release<'a>(&'a Path);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let _ = std::fs::write(self.0, b"go");
            }
        }
        let release = Release(&go);
        wait_for_file(&marker);
        mcp_client_basic(&mesh, agent, &url);
        drop(release);
        h.join().expect("stalled client thread")
    });
    assert_refused(&mesh, &dst, "stalled", &stalled, 400, -32700, "parse error");

    // Truncated JSON (no MCP header: the body claims JSON-RPC).
    let case = "truncated";
    let raw = raw_exchange(
        &mesh,
        agent,
        &dst,
        case,
        &post_raw(&dst, case, "", &add.as_bytes()[..add.len() - 20]),
    );
    assert_refused(&mesh, &dst, case, &raw, 400, -32700, "parse error");

    // A JSON-RPC batch.
    let case = "batch";
    let batch = format!("[{add},{}]", tools_call(2, "add", json!({"a": 1, "b": 1})));
    let raw = raw_exchange(
        &mesh,
        agent,
        &dst,
        case,
        &post_raw(
            &dst,
            case,
            "mcp-protocol-version: 2025-11-25\r\n",
            batch.as_bytes(),
        ),
    );
    assert_refused(&mesh, &dst, case, &raw, 400, -32600, "batch");

    // Invalid UTF-8 inside a string.
    let case = "utf8";
    let mut body =
        br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add"#.to_vec();
    body.extend_from_slice(b"\xff\xfe");
    body.extend_from_slice(br#"","arguments":{"a":2,"b":3}}}"#);
    let raw = raw_exchange(
        &mesh,
        agent,
        &dst,
        case,
        &post_raw(&dst, case, "mcp-protocol-version: 2025-11-25\r\n", &body),
    );
    assert_refused(&mesh, &dst, case, &raw, 400, -32700, "UTF-8");

    // MCP 2026-07-28 headers that disagree with the body.
    let case = "mismatch";
    let raw = raw_exchange(
        &mesh,
        agent,
        &dst,
        case,
        &post_raw(
            &dst,
            case,
            "mcp-protocol-version: 2026-07-28\r\nmcp-method: tools/call\r\nmcp-name: other\r\n",
            add.as_bytes(),
        ),
    );
    let r = assert_refused(&mesh, &dst, case, &raw, 400, -32020, "mcp-name");
    // The body's id could be read: the refusal answers it (JSON-RPC 2.0).
    assert_eq!(r["call"]["jsonrpc_id"], 1, "{r}");
    assert!(String::from_utf8_lossy(&raw.bytes).contains(r#""id":1"#));

    // 10 MiB, declared: refused from the head, while the client keeps sending.
    let big_args = "x".repeat(10 * 1024 * 1024);
    let big = tools_call(4, "add", json!({"a": big_args}));
    let case = "big-declared";
    let raw = raw_exchange(
        &mesh,
        agent,
        &dst,
        case,
        &post_raw(&dst, case, "", big.as_bytes()),
    );
    assert_refused(&mesh, &dst, case, &raw, 413, -32600, "limit");

    // 10 MiB, chunked (no length): refused once the limit is crossed.
    let case = "big-chunked";
    let mut req = format!(
        "POST /mcp?case={case} HTTP/1.1\r\nhost: {dst}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in big.as_bytes().chunks(64 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(&mesh, agent, &dst, case, &req);
    assert_refused(&mesh, &dst, case, &raw, 413, -32600, "limit");
    assert!(
        http_get(mesh.metrics, "/readyz").is_some_and(|r| r.contains(" 200 ")),
        "the daemon is not ready after the large bodies:\n{}",
        mesh.daemon_log()
    );

    // Garbage after the HTTP/2 preface: GOAWAY, closed, recorded.
    let case = "h2-garbage";
    let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"this is not an HTTP/2 frame, just junk bytes\r\n");
    }
    let raw = raw_exchange(&mesh, agent, &dst, case, &req);
    let mut frames = Vec::new();
    let mut rest = &raw.bytes[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let kind = rest[3];
        let payload = &rest[9..(9 + len).min(rest.len())];
        frames.push((kind, payload.to_vec()));
        rest = &rest[(9 + len).min(rest.len())..];
    }
    let goaway = frames
        .iter()
        .find(|(kind, _)| *kind == 7)
        .unwrap_or_else(|| {
            panic!(
                "({case}) no GOAWAY in {:?} (frames {frames:?})\n{}",
                raw.bytes, raw.stderr
            )
        });
    assert!(goaway.1.len() >= 8, "({case}) short GOAWAY {goaway:?}");
    let error_code = u32::from_be_bytes([goaway.1[4], goaway.1[5], goaway.1[6], goaway.1[7]]);
    assert_ne!(error_code, 0, "({case}) GOAWAY NO_ERROR for garbage");
    assert!(
        raw.stderr.contains("EOF") || raw.stderr.contains("RECV"),
        "({case}) not closed: {}",
        raw.stderr
    );
    let port_suffix = format!(":{}", raw.local_port);
    let r = record_where(&mesh, "of the HTTP/2 garbage", |r| {
        r["client"]
            .as_str()
            .is_some_and(|c| c.ends_with(&port_suffix))
            && r["verdict"] == "malformed"
    });
    assert_eq!(r["rule"], "l7.http", "{r:#?}");
    assert_eq!(r["protocol"], "http", "{r:#?}");
    assert_eq!(r["original_destination"], dst.as_str(), "{r:#?}");
    assert!(r["call"].is_null(), "{r:#?}");

    // None of it reached the server; a valid session still works through the
    // same daemon, and its calls are forwarded.
    mcp_client_basic(&mesh, agent, &url);
    let is_add = |r: &&Value| {
        r["call"]["method"] == "tools/call"
            && r["call"]["name"] == "add"
            && r["verdict"] == "forwarded"
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records = mesh.records();
        if records.iter().filter(is_add).count() >= 2 || Instant::now() > deadline {
            break records;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let adds: Vec<&Value> = records.iter().filter(is_add).collect();
    assert_eq!(adds.len(), 2, "two sessions, one add each: {records:#?}");
    for r in adds {
        assert_eq!(r["call"]["outcome"], "result", "{r:#?}");
        assert_eq!(r["call"]["arguments"], json!({"a": 2, "b": 3}), "{r:#?}");
    }
    // One refusal per malformed request, each never forwarded. (Connection
    // records of the valid sessions are not counted: see
    // `a_client_leaving_a_stream_early_is_not_malformed`.)
    let refused: Vec<&str> = records
        .iter()
        .filter(|r| r["verdict"] == "malformed" && r["rule"] == "l7.parse")
        .filter_map(|r| r["call"]["path"].as_str())
        .collect();
    let mut expected: Vec<String> = [
        "stalled",
        "truncated",
        "batch",
        "utf8",
        "mismatch",
        "big-declared",
        "big-chunked",
    ]
    .iter()
    .map(|c| format!("/mcp?case={c}"))
    .collect();
    let mut refused: Vec<String> = refused.into_iter().map(str::to_owned).collect();
    refused.sort();
    expected.sort();
    assert_eq!(refused, expected, "{records:#?}");
}

/// An MCP-ish server on 127.0.0.3 that answers every POST with an SSE
/// stream: the JSON-RPC result at once, then (path ending in `slow`) the
/// stream stays open for 30 s before it ends.
const SSE_SERVER_PY: &str = r#"
import http.server, json, sys, time
host = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        req = json.loads(self.rfile.read(n))
        sys.stderr.write("REQUEST %s\n" % self.path)
        sys.stderr.flush()
        msg = json.dumps({"jsonrpc": "2.0", "id": req.get("id"),
                          "result": {"content": [{"type": "text", "text": "5"}], "isError": False}})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        ev = ("event: message\ndata: %s\n\n" % msg).encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        self.wfile.flush()
        if self.path.endswith("slow"):
            time.sleep(30)
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def log_message(self, fmt, *args):
        pass

srv = http.server.ThreadingHTTPServer((host, 0), Handler)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// MCP lets a client disconnect from a response stream at any time; the
/// SDK client does so once it has its answer. That is not a protocol error.
#[test]
fn a_client_leaving_a_stream_early_is_not_malformed() {
    let mut mesh = Mesh::new("l7leave", &[]);
    let server = PyServer::start(&mesh.dir, "sse_server", SSE_SERVER_PY, &["127.0.0.3"]);
    let dst = server.addr();
    std::fs::write(
        mesh.policy_dir.join("p.yaml"),
        egress_policy("l7leave", std::slice::from_ref(&dst)),
    )
    .expect("policy");
    mesh.start_daemon();
    let body = tools_call(1, "add", json!({"a": 2, "b": 3}));
    let case = "leave-slow";
    let req = post_raw(&dst, case, "", body.as_bytes());
    let raw = raw_exchange_with(
        &mesh,
        "l7leave",
        &dst,
        case,
        &req,
        &["--stop-at", "\"result\""],
    );
    assert!(raw.stderr.contains("STOPPED"), "{}", raw.stderr);
    let port = format!(":{}", raw.local_port);
    let call = record_where(&mesh, "of the call", |r| {
        r["client"].as_str().is_some_and(|c| c.ends_with(&port)) && r["call"].is_object()
    });
    assert_eq!(call["verdict"], "forwarded", "{call:#?}");
    assert_eq!(call["call"]["outcome"], "result", "{call:#?}");
    // A later exchange, so that whatever the first connection left is on
    // record by then.
    let raw2 = raw_exchange(
        &mesh,
        "l7leave",
        &dst,
        "fast",
        &post_raw(&dst, "fast", "", body.as_bytes()),
    );
    let port2 = format!(":{}", raw2.local_port);
    let records = mesh.records_until(|r| {
        r["client"].as_str().is_some_and(|c| c.ends_with(&port2)) && r["call"].is_object()
    });
    let malformed: Vec<&Value> = records
        .iter()
        .filter(|r| r["verdict"] == "malformed")
        .collect();
    assert!(malformed.is_empty(), "{malformed:#?}");
}
