//! `mesh-bench`: the load tool of `cargo xtask bench` (docs/benchmarks.md).
//!
//! Servers (`echo`, `sink`) run on tokio; the clients use one plain thread
//! per connection, so that pacing uses precise sleeps and a measurement never
//! waits behind another connection's work. Client results are one line of
//! flat JSON on stdout (numbers only), errors go to stderr with a non-zero
//! exit. Every client runs unmodified as a governed process
//! (`meshctl exec --agent A -- mesh-bench …`): it only connects, writes and
//! reads like any program would.

use std::io::{self, BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mesh-bench", about = "load tool for `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo server: writes back whatever each connection sends.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Sink server: reads and discards.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// N sequential connect()+close; p50/p99 of connect() in µs.
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Request/response on persistent connections against an echo server.
    Rr {
        #[arg(long)]
        addr: SocketAddr,
        /// Request size in bytes; the reply is the same size.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        /// Aggregate requests per second (open loop); 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Writes 256 KiB chunks to a sink as fast as possible; MB/s.
    Throughput {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Opens N connections to an echo server, one byte round trip on each,
    /// prints `ready`, holds them until stdin closes.
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
    },
}

/// Round trips per connection before the measured window starts.
const WARMUP_ROUND_TRIPS: usize = 10;
/// Chunk size of `throughput`.
const CHUNK: usize = 256 * 1024;
/// A peer that does not answer within this long is an error, not a sample.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    raise_nofile_limit();
    let result = match cli.cmd {
        Cmd::Echo { listen } => serve(listen, Server::Echo),
        Cmd::Sink { listen } => serve(listen, Server::Sink),
        Cmd::Connect { addr, count } => connect(addr, count),
        Cmd::Rr {
            addr,
            size,
            conns,
            rate,
            duration,
        } => rr(addr, size, conns, rate, secs(duration)),
        Cmd::Throughput {
            addr,
            conns,
            duration,
        } => throughput(addr, conns, secs(duration)),
        Cmd::Hold { addr, conns } => hold(addr, conns),
    };
    if let Err(e) = result {
        eprintln!("mesh-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Soft RLIMIT_NOFILE up to the hard limit: `hold` and the servers keep
/// thousands of sockets.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Precise sleeps for open-loop pacing: the default timer slack is 50 µs.
/// Threads inherit it from the thread that creates them.
fn tight_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

// ---------------------------------------------------------------- servers

#[derive(Clone, Copy)]
enum Server {
    Echo,
    Sink,
}

fn serve(listen: SocketAddr, kind: Server) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let _ = match kind {
                            Server::Echo => echo_conn(stream).await,
                            Server::Sink => sink_conn(stream).await,
                        };
                    });
                }
                Err(e) => {
                    // EMFILE and the like: let connections drain.
                    eprintln!("mesh-bench: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
}

async fn echo_conn(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn sink_conn(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; CHUNK];
    while stream.read(&mut buf).await? != 0 {}
    Ok(())
}

// ---------------------------------------------------------------- clients

fn dial(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Exact percentile (nearest rank) of sorted nanoseconds, in µs.
fn pct_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn mean_us(v: &[u64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0
}

fn connect(addr: SocketAddr, count: usize) -> Result<()> {
    let mut lat = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut last_error = None;
    for _ in 0..count {
        let t = Instant::now();
        match TcpStream::connect(addr) {
            Ok(s) => {
                lat.push(t.elapsed().as_nanos() as u64);
                drop(s);
            }
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }
    if lat.is_empty() {
        bail!(
            "every connect to {addr} failed: {}",
            last_error.map_or_else(String::new, |e| e.to_string())
        );
    }
    if let Some(e) = last_error {
        eprintln!("mesh-bench: {errors} of {count} connects failed, last: {e}");
    }
    lat.sort_unstable();
    println!(
        "{{\"count\":{count},\"errors\":{errors},\"p50_us\":{:.1},\"p99_us\":{:.1},\"mean_us\":{:.1}}}",
        pct_us(&lat, 0.50),
        pct_us(&lat, 0.99),
        mean_us(&lat),
    );
    Ok(())
}

/// One round trip: `buf` out, the same bytes back.
fn round_trip(s: &mut TcpStream, buf: &mut [u8], back: &mut [u8], seq: u64) -> Result<()> {
    let tag = seq.to_le_bytes();
    let n = tag.len().min(buf.len());
    buf[..n].copy_from_slice(&tag[..n]);
    s.write_all(buf).context("send")?;
    s.read_exact(back).context("receive echo")?;
    if back[..n] != buf[..n] {
        bail!("echo mismatch (request {seq})");
    }
    Ok(())
}

struct RrThread {
    /// Latency samples, ns.
    lat: Vec<u64>,
    /// How late the sender started after the scheduled time, ns (paced only).
    lag: Vec<u64>,
    /// When the last response of the window arrived.
    last: Instant,
}

fn rr(addr: SocketAddr, size: usize, conns: usize, rate: u64, duration: Duration) -> Result<()> {
    if conns == 0 || size == 0 {
        bail!("--conns and --size must be positive");
    }
    tight_timer_slack();
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = dial(addr)?;
        let (mut buf, mut back) = (vec![0x5au8; size], vec![0u8; size]);
        for i in 0..WARMUP_ROUND_TRIPS {
            round_trip(&mut s, &mut buf, &mut back, i as u64).context("warm-up")?;
        }
        streams.push(s);
    }
    // Connections and threads are ready; the window starts for everyone at once.
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    // Open loop: connection i sends at start + i/rate + k*conns/rate.
    let period = (rate > 0).then(|| Duration::from_secs_f64(conns as f64 / rate as f64));
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            thread::spawn(move || -> Result<RrThread> {
                let (mut buf, mut back) = (vec![0x5au8; size], vec![0u8; size]);
                let cap = match period {
                    Some(p) => (duration.as_secs_f64() / p.as_secs_f64()) as usize + 2,
                    None => 1 << 16,
                };
                let mut out = RrThread {
                    lat: Vec::with_capacity(cap),
                    lag: Vec::with_capacity(if period.is_some() { cap } else { 0 }),
                    last: start,
                };
                let mut seq = 0u64;
                match period {
                    Some(period) => {
                        let mut sched = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        let mut prev_done = start;
                        while sched < end {
                            let now = Instant::now();
                            if now < sched {
                                thread::sleep(sched - now);
                            }
                            let sent = Instant::now();
                            round_trip(&mut s, &mut buf, &mut back, seq)?;
                            let done = Instant::now();
                            // Coordinated omission: when the previous answer came
                            // after this request was due, the request waited for
                            // the system under test, so count from when it was
                            // due. When the connection was idle, any delay before
                            // sending is this tool's own timer; count from the send.
                            let origin = if prev_done > sched { sched } else { sent };
                            out.lat.push((done - origin).as_nanos() as u64);
                            out.lag
                                .push(sent.saturating_duration_since(sched).as_nanos() as u64);
                            prev_done = done;
                            out.last = done;
                            seq += 1;
                            sched += period;
                        }
                    }
                    None => {
                        let now = Instant::now();
                        if now < start {
                            thread::sleep(start - now);
                        }
                        loop {
                            let sent = Instant::now();
                            if sent >= end {
                                break;
                            }
                            round_trip(&mut s, &mut buf, &mut back, seq)?;
                            let done = Instant::now();
                            out.lat.push((done - sent).as_nanos() as u64);
                            out.last = done;
                            seq += 1;
                        }
                    }
                }
                Ok(out)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut lag = Vec::new();
    let mut last = start;
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        lat.extend_from_slice(&t.lat);
        lag.extend_from_slice(&t.lag);
        last = last.max(t.last);
    }
    let elapsed = (last - start).as_secs_f64().max(duration.as_secs_f64());
    lat.sort_unstable();
    lag.sort_unstable();
    println!(
        "{{\"conns\":{conns},\"size\":{size},\"rate\":{rate},\"requests\":{},\"seconds\":{elapsed:.3},\
         \"rps\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\
         \"max_us\":{:.1},\"mean_us\":{:.1},\"send_lag_p50_us\":{:.1},\"send_lag_p99_us\":{:.1}}}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct_us(&lat, 0.50),
        pct_us(&lat, 0.90),
        pct_us(&lat, 0.99),
        pct_us(&lat, 0.999),
        pct_us(&lat, 1.0),
        mean_us(&lat),
        pct_us(&lag, 0.50),
        pct_us(&lag, 0.99),
    );
    Ok(())
}

fn throughput(addr: SocketAddr, conns: usize, duration: Duration) -> Result<()> {
    if conns == 0 {
        bail!("--conns must be positive");
    }
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(dial(addr)?);
    }
    let barrier = Arc::new(Barrier::new(conns + 1));
    let handles: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<(u64, Instant)> {
                let chunk = vec![0xa5u8; CHUNK];
                barrier.wait();
                let end = Instant::now() + duration;
                let mut bytes = 0u64;
                while Instant::now() < end {
                    s.write_all(&chunk).context("write to sink")?;
                    bytes += CHUNK as u64;
                }
                Ok((bytes, Instant::now()))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut last = start;
    for h in handles {
        let (b, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        bytes += b;
        last = last.max(t);
    }
    let secs = (last - start).as_secs_f64();
    println!(
        "{{\"conns\":{conns},\"bytes\":{bytes},\"seconds\":{secs:.3},\"mb_per_s\":{:.1}}}",
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}

fn hold(addr: SocketAddr, conns: usize) -> Result<()> {
    let t = Instant::now();
    let mut held = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut s = dial(addr).with_context(|| format!("connection {}", i + 1))?;
        let mut b = [0u8; 1];
        s.write_all(b"h")
            .and_then(|()| s.read_exact(&mut b))
            .with_context(|| format!("round trip on connection {}", i + 1))?;
        held.push(s);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    eprintln!(
        "mesh-bench: holding {conns} connections to {addr} (opened in {:.0} ms); close stdin to release",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // Until EOF (or an error) on stdin.
    let mut line = String::new();
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
        line.clear();
    }
    drop(held);
    Ok(())
}
