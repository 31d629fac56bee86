//! meshctl's human output: tables, times and plurals (`-o json` prints the
//! API's documents as they are).
use mesh_agent::{
    admin::api::{BudgetsResponse, StatusResponse},
    records::ConnectionRecord,
};

pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("meshctl: {e}"),
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub(crate) fn print_budgets(r: &BudgetsResponse) {
    let rows: Vec<_> = r
        .agents
        .iter()
        .flat_map(|a| a.budgets.iter().map(move |b| (&a.agent, b)))
        .collect();
    if rows.is_empty() {
        println!("no budgets in the policy in force");
        return;
    }
    println!(
        "{:<20} {:<16} {:<7} {:>14} {:>14} {:>14} {:>14} {:>8}  ON EXHAUST",
        "AGENT", "BUDGET", "UNIT", "USED", "RESERVED", "REMAINING", "LIMIT", "WINDOW"
    );
    for (agent, b) in rows {
        println!(
            "{:<20} {:<16} {:<7} {:>14} {:>14} {:>14} {:>14} {:>8}  {}",
            agent,
            b.name,
            b.unit,
            b.used.to_string(),
            b.reserved.to_string(),
            b.remaining.to_string(),
            b.limit.to_string(),
            window_text(b.window_secs),
            b.on_exhaust
        );
    }
}

/// `90s`, `15m`, `24h`, `7d`: the largest unit that divides it.
fn window_text(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

pub(crate) fn print_status(s: &StatusResponse) {
    println!(
        "mesh-agent {}  listen {}  attach {}",
        s.version,
        s.listen.join(", "),
        s.attach_cgroup
    );
    println!(
        "active connections: {}   agents with policy: {}",
        s.active_connections,
        if s.policy_agents.is_empty() {
            "none".to_owned()
        } else {
            s.policy_agents.join(", ")
        }
    );
    println!(
        "policy: generation {}, loaded {} from {}",
        s.policy_generation,
        describe_time(s.policy_loaded_unix_ms),
        s.policy_dir
    );
    println!();
    if s.agents.is_empty() {
        println!("no governed agents");
        return;
    }
    println!(
        "{:<20} {:<12} {:>7} {:>9} {:>10} {:>8} {:>12} {:>12}",
        "AGENT", "STATE", "CGROUPS", "CONNECTS", "REDIRECTED", "REFUSED", "BYTES IN", "BYTES OUT"
    );
    for a in &s.agents {
        let t = &a.totals;
        println!(
            "{:<20} {:<12} {:>7} {:>9} {:>10} {:>8} {:>12} {:>12}",
            a.name,
            if a.quarantined {
                "QUARANTINED"
            } else {
                "active"
            },
            a.cgroups.len(),
            t.connects,
            t.redirected,
            t.refused,
            t.bytes_in,
            t.bytes_out
        );
    }
    println!();
    println!("{:<20} {:<10} {:<12} CGROUP", "AGENT", "CGROUP ID", "STATE");
    for a in &s.agents {
        for c in &a.cgroups {
            println!(
                "{:<20} {:<10} {:<12} {}",
                a.name,
                c.id,
                if c.quarantined {
                    "QUARANTINED"
                } else {
                    "active"
                },
                c.path.as_deref().unwrap_or("(removed)")
            );
        }
    }
}

pub(crate) fn print_records(records: &[ConnectionRecord]) {
    if records.is_empty() {
        println!("no records");
        return;
    }
    println!(
        "{:<6} {:<14} {:>7} {:<22} {:<5} {:<32} {:<16} {:>8} {:>8} WHY",
        "ID", "AGENT", "PID", "DESTINATION", "PROTO", "CALL", "VERDICT", "UP", "DOWN"
    );
    for r in records {
        let call = r.call.as_ref().map_or_else(String::new, |c| {
            let mut text = c.method.clone();
            if let Some(name) = &c.name {
                text.push(' ');
                text.push_str(name);
            }
            if let Some(outcome) = &c.outcome {
                text.push_str(" -> ");
                text.push_str(outcome);
            }
            text
        });
        println!(
            "{:<6} {:<14} {:>7} {:<22} {:<5} {:<32} {:<16} {:>8} {:>8} {}",
            r.id,
            r.agent.as_deref().unwrap_or("-"),
            r.pid,
            r.original_destination.as_deref().unwrap_or("-"),
            r.protocol.map_or("tcp", |p| p.as_str()),
            call,
            serde_json::to_value(r.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.bytes_to_upstream,
            r.bytes_to_client,
            r.reason.as_deref().or(r.rule.as_deref()).unwrap_or("")
        );
    }
}

/// `2026-01-02 03:04:05 UTC (12s ago)`; no time zone database needed.
fn describe_time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "at an unknown time".into();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let now = mesh_agent::records::unix_ms(std::time::SystemTime::now());
    let ago = now.saturating_sub(unix_ms) / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC ({ago}s ago)",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
