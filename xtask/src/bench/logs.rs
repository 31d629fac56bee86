//! Warnings and errors in the daemon logs of a run.
use super::*;

/// WARN and ERROR lines of the daemon logs, by message (timestamps cut), in
/// order of first appearance.
pub(super) struct LogScan {
    pub(super) lines: usize,
    pub(super) distinct: Vec<(String, usize)>,
}

pub(super) fn scan_daemon_logs(logs: &[PathBuf]) -> LogScan {
    let mut scan = LogScan {
        lines: 0,
        distinct: Vec::new(),
    };
    for log in logs {
        // The MCP part's logs hold a record line per call: read line by line.
        let Ok(file) = std::fs::File::open(log) else {
            continue;
        };
        for line in BufReader::new(file).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            if !line.contains("WARN")
                && !line.contains("ERROR")
                && !line.contains("error:")
                && !line.contains("panicked")
            {
                continue;
            }
            let clean = strip_ansi(&line);
            let level = [" WARN ", " ERROR ", "error:", "panicked"]
                .iter()
                .find_map(|l| clean.find(l));
            let Some(at) = level else { continue };
            scan.lines += 1;
            let message = clean[at..].trim().to_owned();
            match scan.distinct.iter_mut().find(|(m, _)| *m == message) {
                Some((_, n)) => *n += 1,
                None => scan.distinct.push((message, 1)),
            }
        }
    }
    scan
}

pub(super) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
