//! The opaque TCP part of the document.
use super::*;

/// The opaque TCP part of the document.
pub(super) fn render_tcp(d: &mut String, p: &Params, nproc: usize, tcp: &TcpPart) {
    let _ = writeln!(d, "## Opaque TCP\n");
    let _ = writeln!(d, "### Method\n");
    let _ = writeln!(
        d,
        "One load tool for every target, `mesh-bench` (`benches/`), against its own echo and sink servers \
         on 127.0.0.2 (tokio). Targets:\n\n\
         - **direct**: the client connects to the servers itself, ungoverned;\n\
         - **nginx**: {} as a plain stream (L4) proxy on 127.0.0.3 (`worker_processes 2`, \
         `proxy_pass` to the servers, no other tuning), client ungoverned;\n\
         - **mesh (splice)** / **mesh (copy)**: the client runs governed, \
         `meshctl exec --agent {AGENT} -- mesh-bench …`, and connects to the servers' addresses; the kernel \
         redirects each connect to mesh-agent (release build, `RUST_LOG=info`), which applies the egress \
         policy (`allow: [\"127.0.0.2:*\"]`) and relays to the original destination, with \
         `MESH_RELAY=splice` (splice(2) through pipes) or `MESH_RELAY=copy` (user-space buffers). \
         The daemon is started fresh for each measurement set.\n",
        tcp.nginx_version
    );
    let _ = writeln!(
        d,
        "Loads, in this order for each target:\n\n\
         1. **connect**: {CONNECT_COUNT} sequential `connect()` + close; the time of `connect()` alone. \
         Governed for mesh, so this is the cost of the kernel redirect (plus the listener's handshake).\n\
         2. **rr @1k rps**: {PACED_CONNS} persistent connections, {REQUEST_SIZE}-byte request, wait for the \
         full {REQUEST_SIZE}-byte echo; a fixed aggregate {PACED_RATE} requests/s for {s} s, open loop. \
         Latency counts from the scheduled send time whenever the previous answer on that connection \
         arrived after it (no coordinated omission), otherwise from the actual send (the tool's own timer \
         wake-up is not the target's latency).\n\
         3. **max req/s**: the same exchange on {MAX_CONNS} connections, as fast as possible, {s} s.\n\
         4. **MB/s**: {THROUGHPUT_CONNS} connections writing 256 KiB chunks to the sink as fast as possible \
         for {s} s (MB = 10^6 bytes).\n\n\
         Targets run interleaved (direct, nginx, mesh splice, mesh copy; again …), {reps} \
         repetition{plural}; the table shows medians. Nothing is pinned: client, proxy and servers share the {nproc} CPUs the \
         same way for every target, all on loopback. Then, with each relay strategy, the daemon's resident \
         memory (VmRSS from /proc/PID/status) idle, 2 s after it is ready, and while a governed \
         `mesh-bench hold` keeps {HOLD_CONNS} connections open through it (a 1-byte echo on each, so each \
         is proxied end to end).\n",
        s = p.seconds,
        reps = p.reps,
        plural = if p.reps == 1 { "" } else { "s" },
    );

    // Main table.
    let _ = writeln!(
        d,
        "### Results (median of {} repetition{})\n",
        p.reps,
        if p.reps == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        d,
        "| target | connect p50 / p99 µs | rr p50 / p99 µs @1k rps | max req/s | MB/s | vs direct |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|");
    let direct_p50 = tcp.median(Target::Direct, "rr_p50");
    let direct_rps = tcp.median(Target::Direct, "max_rps");
    let direct_mbps = tcp.median(Target::Direct, "mbps");
    let direct_connect = tcp.median(Target::Direct, "connect_p50");
    for t in TARGETS {
        let m = |k| tcp.median(t, k);
        let vs = if t == Target::Direct {
            "1.00x".to_owned()
        } else {
            let r = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |x| format!("{x:.2}x"));
            format!(
                "connect p50 {}, rr p50 {}, req/s {}, MB/s {}",
                r(ratio(m("connect_p50"), direct_connect)),
                r(ratio(m("rr_p50"), direct_p50)),
                r(ratio(m("max_rps"), direct_rps)),
                r(ratio(m("mbps"), direct_mbps)),
            )
        };
        let _ = writeln!(
            d,
            "| {} | {} / {} | {} / {} | {} | {} | {} |",
            t.label(),
            opt(m("connect_p50")),
            opt(m("connect_p99")),
            opt(m("rr_p50")),
            opt(m("rr_p99")),
            opt(m("max_rps")),
            opt(m("mbps")),
            vs
        );
    }
    let _ = writeln!(
        d,
        "\n\"vs direct\": latency as a multiple of direct's (lower is better), req/s and MB/s as a fraction \
         of direct's (higher is better).\n"
    );

    // Memory.
    let _ = writeln!(d, "### mesh-agent memory\n");
    for (relay, m) in &tcp.memory {
        match m {
            Ok(m) => {
                let _ = writeln!(
                    d,
                    "- `MESH_RELAY={relay}`: idle **{:.1} MiB**; with {HOLD_CONNS} concurrent proxied connections \
                     **{:.1} MiB** (peak {:.1} MiB; the daemon reported {} active connections; opening them took \
                     {:.0} ms); {:.1} MiB 2 s after they closed.",
                    kib_to_mib(m.idle_kib),
                    kib_to_mib(m.held_kib),
                    kib_to_mib(m.held_hwm_kib),
                    m.active.map_or_else(|| "n/a".into(), |a| a.to_string()),
                    m.open_ms,
                    kib_to_mib(m.after_kib),
                );
            }
            Err(e) => {
                let _ = writeln!(d, "- `MESH_RELAY={relay}`: failed: {e:#}");
            }
        }
    }
    let _ = writeln!(
        d,
        "\nVmRSS counts the daemon's own pages; the kernel's socket and pipe buffers are not in it.\n"
    );

    // The targets.
    targets::write_header(d);
    let verdict = targets::verdict;
    let nginx_mbps = tcp.median(Target::Nginx, "mbps");
    for t in [Target::MeshSplice, Target::MeshCopy] {
        let f = ratio(tcp.median(t, "rr_p50"), direct_p50);
        let _ = writeln!(
            d,
            "| {}: rr p50 within {P50_FACTOR_TARGET}x of direct | {} µs vs {} µs = {} | {} |",
            t.label(),
            opt(tcp.median(t, "rr_p50")),
            opt(direct_p50),
            f.map_or_else(|| "n/a".into(), |f| format!("{f:.2}x")),
            verdict(f.map(|f| f <= P50_FACTOR_TARGET)),
        );
    }
    for t in [Target::MeshSplice, Target::MeshCopy] {
        let mbps = tcp.median(t, "mbps");
        let _ = writeln!(
            d,
            "| {}: throughput at least nginx's | {} MB/s vs {} MB/s | {} |",
            t.label(),
            opt(mbps),
            opt(nginx_mbps),
            verdict(mbps.zip(nginx_mbps).map(|(m, n)| m >= n)),
        );
    }
    for (relay, m) in &tcp.memory {
        let held = m.as_ref().ok().map(|m| kib_to_mib(m.held_kib));
        let _ = writeln!(
            d,
            "| mesh ({relay}): RSS with {HOLD_CONNS} connections under {RSS_TARGET_MIB:.0} MiB | {} | {} |",
            held.map_or_else(|| "n/a".into(), |h| format!("{h:.1} MiB")),
            verdict(held.map(|h| h < RSS_TARGET_MIB)),
        );
    }
    let added: Vec<String> = [Target::Nginx, Target::MeshSplice, Target::MeshCopy]
        .iter()
        .filter_map(|&t| {
            let a = tcp.median(t, "rr_p50")? - direct_p50?;
            Some(format!("{} {a:+.0} µs", t.label()))
        })
        .collect();
    if !added.is_empty() {
        let _ = writeln!(
            d,
            "\nFor comparison, rr p50 added over direct @1k rps: {}.",
            added.join(", ")
        );
    }
    let _ = writeln!(d);

    // Relay strategy.
    let _ = writeln!(d, "### Relay strategy: splice or copy\n");
    let mut wins = (0, 0);
    let compare = [
        ("rr p50 @1k rps", "rr_p50", false),
        ("rr p99 @1k rps", "rr_p99", false),
        ("max req/s", "max_rps", true),
        ("MB/s", "mbps", true),
    ];
    for (name, key, higher) in compare {
        let (s, c) = (
            tcp.median(Target::MeshSplice, key),
            tcp.median(Target::MeshCopy, key),
        );
        let line = match (s, c) {
            (Some(s), Some(c)) => {
                let (better, worse, who) = if (s > c) == higher {
                    (s, c, "splice")
                } else {
                    (c, s, "copy")
                };
                let diff = (better - worse).abs() / worse.max(f64::MIN_POSITIVE);
                if diff < 0.03 {
                    format!(
                        "{name}: splice {} vs copy {}: within 3%, a tie",
                        fmt_num(s),
                        fmt_num(c)
                    )
                } else {
                    if who == "splice" {
                        wins.0 += 1;
                    } else {
                        wins.1 += 1;
                    }
                    format!(
                        "{name}: splice {} vs copy {}: **{who}** better by {:.0}%",
                        fmt_num(s),
                        fmt_num(c),
                        diff * 100.0
                    )
                }
            }
            _ => format!("{name}: not measured"),
        };
        let _ = writeln!(d, "- {line}");
    }
    let held = |relay: &str| {
        tcp.memory
            .iter()
            .find(|(r, _)| *r == relay)
            .and_then(|(_, m)| m.as_ref().ok())
            .map(|m| kib_to_mib(m.held_kib))
    };
    if let (Some(s), Some(c)) = (held("splice"), held("copy")) {
        let _ = writeln!(
            d,
            "- RSS with {HOLD_CONNS} connections: splice {s:.1} MiB vs copy {c:.1} MiB"
        );
    }
    let conclusion = match wins {
        (s, c) if s > c => {
            format!("**splice** was faster in this run ({s} of 4 comparisons against {c}).")
        }
        (s, c) if c > s => {
            format!("**copy** was faster in this run ({c} of 4 comparisons against {s}).")
        }
        _ => "Neither strategy was clearly faster in this run.".to_owned(),
    };
    let _ = writeln!(d, "\n{conclusion}\n");

    // Raw repetitions.
    let _ = writeln!(d, "### Every repetition\n");
    let _ = writeln!(
        d,
        "| rep | target | connect p50 / p99 µs | rr p50 / p99 µs @1k rps | rr req/s achieved | client send lag p99 µs | max req/s (p50 / p99 µs) | MB/s | daemon: connections allowed / refused / error | other CPU / steal % |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &tcp.runs {
        let g = |k: &str| opt(r.values.get(k).copied());
        let counters = r.mesh.map_or_else(
            || "".to_owned(),
            |c| format!("{} / {} / {}", c.allowed, c.refused, c.errors),
        );
        let _ = writeln!(
            d,
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} ({} / {}) | {} | {} | {} |",
            r.rep,
            r.target.label(),
            g("connect_p50"),
            g("connect_p99"),
            g("rr_p50"),
            g("rr_p99"),
            g("rr_rps"),
            g("send_lag_p99"),
            g("max_rps"),
            g("max_p50"),
            g("max_p99"),
            g("mbps"),
            counters,
            OtherCpu::from_values(&r.values),
        );
    }
    let _ = writeln!(d);
}
