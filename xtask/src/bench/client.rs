//! Running a load client to completion and reading what it prints.
use super::*;

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a client to completion (killing it, and for governed clients the
/// agents' cgroups, after `timeout`) and parses the flat JSON line it prints.
pub(super) fn run_client(
    env: &Env,
    cmd: Command,
    timeout: Duration,
) -> Result<BTreeMap<String, f64>> {
    let (shown, stdout, stderr) = run_process(env, cmd, timeout)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| {
            format!("no result from {shown}; stdout: {stdout:?}, stderr: {stderr:?}")
        })?;
    parse_flat_json(line)
}

/// Runs a client to completion (killing it, and for governed clients the
/// agents' cgroups, after `timeout`); its command line, stdout and stderr
/// when it succeeded.
pub(super) fn run_process(
    env: &Env,
    mut cmd: Command,
    timeout: Duration,
) -> Result<(String, String, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = display_cmd(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A governed client is meshctl's child, in a cgroup below ours.
            if env.parent_cgroup.exists() {
                let _ = std::fs::write(env.parent_cgroup.join("cgroup.kill"), "1");
            }
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        None => bail!(
            "timed out after {} s: {shown}\n{}",
            timeout.as_secs(),
            tail(&stderr, 10)
        ),
        Some(s) if !s.success() => bail!("{shown} failed ({s}):\n{}", tail(&stderr, 10)),
        Some(_) => {}
    }
    Ok((shown, stdout, stderr))
}

pub(super) fn reader<R: std::io::Read + Send + 'static>(
    r: Option<R>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// `{"a":1,"b":2.5}` (what mesh-bench prints: flat, numbers only).
pub(super) fn parse_flat_json(line: &str) -> Result<BTreeMap<String, f64>> {
    let inner = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .with_context(|| format!("not a JSON object: {line}"))?;
    let mut map = BTreeMap::new();
    for field in inner.split(',').filter(|f| !f.trim().is_empty()) {
        let (k, v) = field
            .split_once(':')
            .with_context(|| format!("bad field {field:?} in {line}"))?;
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("bad number in {field:?}"))?;
        map.insert(k.trim().trim_matches('"').to_owned(), v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_json() {
        let m =
            parse_flat_json(r#"{"count":2000,"errors":0,"p50_us":27.0,"p99_us":449.9}"#).unwrap();
        assert_eq!(m["count"], 2000.0);
        assert_eq!(m["p99_us"], 449.9);
        assert!(parse_flat_json("ready").is_err());
    }
}
