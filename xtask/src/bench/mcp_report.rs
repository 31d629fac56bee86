//! The MCP tools/call part of the document.

use super::mcp::*;
use super::*;

pub(super) fn render(d: &mut String, p: &Params, nproc: usize, m: &McpPart) {
    let s = p.seconds;
    let reps = p.reps;
    let plural = if reps == 1 { "" } else { "s" };
    let _ = writeln!(d, "## MCP tools/call\n");
    let _ = writeln!(d, "### Method\n");
    let _ = writeln!(
        d,
        "The method of the benchmark anchors. One JSON-RPC `tools/call` POST to `/mcp` \
         ({} bytes; `arguments` {ARGS_BYTES} bytes; `content-type: application/json`, \
         `accept: {ACCEPT}`), answered with a {REPLY_BYTES}-byte JSON-RPC result by an nginx backend on \
         127.0.0.2 ({}, `worker_processes 2`, `return 200 '…'` with `default_type application/json`, \
         keepalive, no access log). Load from {} (`--no-tui --output-format json`, HTTP/1.1 keepalive). \
         Targets:\n\n\
         - **direct**: oha to the backend, ungoverned;\n\
         - **nginx**: oha to nginx on 127.0.0.3, an HTTP reverse proxy (`worker_processes 2`, \
         `proxy_pass` to an `upstream` with `keepalive 64`, `proxy_http_version 1.1`, no access log), \
         ungoverned;\n\
         - **mesh**: oha governed, `meshctl exec --agent {AGENT} -- oha …`, to the backend's own address; \
         the kernel redirects each connect to mesh-agent (release build, default settings, \
         `RUST_LOG=info`), which parses every request as HTTP and JSON-RPC, classifies it as an MCP \
         `tools/call` of `{TOOL}` with its arguments, applies the policy (`allow: [\"127.0.0.2:*\"]`), \
         forwards it on a pooled upstream connection, reads the outcome from the response and records \
         the call (a record line in the daemon's log and the `mesh_tool_calls_total` metric). A fresh \
         daemon for each measurement set.\n",
        m.request_bytes, m.nginx_version, m.oha_version
    );
    let _ = writeln!(
        d,
        "Loads, for each target: **@1k rps**: a fixed {PACED_RATE} calls/s (`-q {PACED_RATE}`) on \
         {PACED_CONNS} connections for {s} s, latency p50/p99 as oha reports it (from each request's \
         actual send; no coordinated-omission correction); **max**: {MAX_CONNS} connections as fast as \
         possible for {s} s, calls/s. Targets run interleaved (direct, nginx, mesh; again …), {reps} \
         repetition{plural}; the tables show medians. Nothing is pinned: oha, proxy and backend share \
         the {nproc} CPUs the same way for every target, all on loopback in the host's network namespace \
         like the TCP part (the anchors ran in `unshare --net`). \"CPU µs/call\": user + system CPU time of the proxy's processes (nginx's master \
         and workers; the daemon) and of the backend's during a load, from /proc/PID/stat, divided by \
         the calls answered.\n"
    );

    let _ = writeln!(d, "### Results (median of {reps} repetition{plural})\n");
    let _ = writeln!(
        d,
        "| target | p50 µs @1k rps | p99 µs | max req/s | vs direct | added p50 vs direct | proxy CPU µs/call @1k / max |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|");
    let direct_p50 = m.median(McpTarget::Direct, "p50");
    let direct_rps = m.median(McpTarget::Direct, "max_rps");
    for t in MCP_TARGETS {
        let med = |k| m.median(t, k);
        let vs =
            ratio(med("max_rps"), direct_rps).map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"));
        let added = match (t, med("p50"), direct_p50) {
            (McpTarget::Direct, _, _) => "–".to_owned(),
            (_, Some(a), Some(b)) => format!("{:+.0} µs", a - b),
            _ => "n/a".to_owned(),
        };
        let cpu = if t == McpTarget::Direct {
            "–".to_owned()
        } else {
            format!("{} / {}", opt(med("cpu_proxy")), opt(med("max_cpu_proxy")))
        };
        let _ = writeln!(
            d,
            "| {} | {} | {} | {} | {vs} | {added} | {cpu} |",
            t.description(),
            opt(med("p50")),
            opt(med("p99")),
            opt(med("max_rps")),
        );
    }
    let _ = writeln!(
        d,
        "\n\"vs direct\": max req/s as a fraction of direct's. The benchmark anchors (measured earlier on this \
         kind of machine, 20 s loads, in a network namespace): direct 77 µs / 71,567 req/s, nginx 159 µs / \
         40,821 req/s (0.57x, +82 µs).\n"
    );

    targets::write_header(d);
    let verdict = targets::verdict;
    let mesh_p50 = m.median(McpTarget::Mesh, "p50");
    let added = mesh_p50.zip(direct_p50).map(|(a, b)| a - b);
    let _ = writeln!(
        d,
        "| mesh: added p50 @1k rps at most {ADDED_P50_TARGET_US:.0} µs | {} ({} µs vs {} µs) | {} |",
        added.map_or_else(|| "n/a".into(), |a| format!("{a:+.0} µs")),
        opt(mesh_p50),
        opt(direct_p50),
        verdict(added.map(|a| a <= ADDED_P50_TARGET_US)),
    );
    let mesh_rps = m.median(McpTarget::Mesh, "max_rps");
    let r = ratio(mesh_rps, direct_rps);
    let _ = writeln!(
        d,
        "| mesh: max req/s at least {RPS_RATIO_TARGET}x direct | {} ({} vs {} req/s) | {} |",
        r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}x")),
        opt(mesh_rps),
        opt(direct_rps),
        verdict(r.map(|r| r >= RPS_RATIO_TARGET)),
    );
    let nginx_added = m
        .median(McpTarget::Nginx, "p50")
        .zip(direct_p50)
        .map(|(a, b)| a - b);
    let nginx_r = ratio(m.median(McpTarget::Nginx, "max_rps"), direct_rps);
    let _ = writeln!(
        d,
        "| for comparison, nginx | added p50 {}, max req/s {} | |",
        nginx_added.map_or_else(|| "n/a".into(), |a| format!("{a:+.0} µs")),
        nginx_r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}x")),
    );
    let _ = writeln!(d);

    let _ = writeln!(d, "### Every repetition\n");
    let _ = writeln!(
        d,
        "| rep | target | p50 / p99 µs @1k rps | req/s achieved @1k | max req/s (p50 / p99 µs) | proxy CPU µs/call @1k / max | backend CPU µs/call @1k / max | daemon: tools/call recorded / MCP requests allowed / other; RSS (peak) MiB | other CPU / steal % |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|---|---|");
    for r in &m.runs {
        let g = |k: &str| opt(r.values.get(k).copied());
        let proxy_cpu = if r.target == McpTarget::Direct {
            String::new()
        } else {
            format!("{} / {}", g("cpu_proxy"), g("max_cpu_proxy"))
        };
        let daemon = r.daemon.map_or_else(String::new, |c| {
            format!(
                "{} / {} / {}; {} ({})",
                c.tool_calls,
                c.mcp_allowed,
                c.other,
                g("rss_mib"),
                g("hwm_mib")
            )
        });
        let _ = writeln!(
            d,
            "| {} | {} | {} / {} | {} | {} ({} / {}) | {proxy_cpu} | {} / {} | {daemon} | {} |",
            r.rep,
            r.target.label(),
            g("p50"),
            g("p99"),
            g("rps"),
            g("max_rps"),
            g("max_p50"),
            g("max_p99"),
            g("cpu_backend"),
            g("max_cpu_backend"),
            OtherCpu::from_values(&r.values),
        );
    }
    let _ = writeln!(d);
}
