//! How much CPU other work took while a measurement ran (other processes
//! in this machine; the hypervisor's steal time), so that a disturbed
//! repetition can be told from a slow target.
use super::*;

/// CPU time (clock ticks) at one moment: the machine's user + nice + system
/// time (/proc/stat), that of this run's process tree (this process and its
/// live descendants, each with its reaped children), and that of kernel
/// threads (which include softirq work done for the run's own traffic),
/// and the time the hypervisor ran something else instead (steal). The
/// difference of two samples is what other work on the machine used.
pub(super) struct CpuSample {
    pub(super) at: Instant,
    pub(super) busy: u64,
    pub(super) steal: u64,
    pub(super) ours: u64,
    pub(super) kernel: u64,
}

/// What other work took while a measurement ran, in % of the machine (all
/// its CPUs).
#[derive(Clone, Copy)]
pub(super) struct OtherCpu {
    /// Processes outside this run, inside this machine.
    pub(super) other: f64,
    /// Time the hypervisor gave to others (steal, /proc/stat).
    pub(super) steal: f64,
}

impl OtherCpu {
    pub(super) fn show(self) -> String {
        format!("{:.1} / {:.1}", self.other, self.steal)
    }

    pub(super) fn insert_into(self, values: &mut BTreeMap<&'static str, f64>) {
        values.insert("other_cpu", self.other);
        values.insert("steal", self.steal);
    }

    pub(super) fn from_values(values: &BTreeMap<&'static str, f64>) -> String {
        match (values.get("other_cpu"), values.get("steal")) {
            (Some(&other), Some(&steal)) => OtherCpu { other, steal }.show(),
            _ => "n/a".into(),
        }
    }
}

impl CpuSample {
    pub(super) fn take() -> CpuSample {
        // cpu  user nice system idle iowait irq softirq steal …
        let fields: Vec<u64> = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("cpu "))?.to_owned();
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                )
            })
            .unwrap_or_default();
        let busy = fields.iter().take(3).sum();
        let steal = fields.get(7).copied().unwrap_or(0);
        // pid -> (ppid, utime + stime + cutime + cstime)
        let mut procs: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                    continue;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                procs.insert(pid, (num(1) as u32, num(11) + num(12) + num(13) + num(14)));
            }
        }
        let me = std::process::id();
        let in_tree = |mut pid: u32, root: u32| {
            for _ in 0..64 {
                if pid == root {
                    return true;
                }
                match procs.get(&pid) {
                    Some(&(ppid, _)) if ppid != 0 => pid = ppid,
                    _ => return false,
                }
            }
            false
        };
        let (mut ours, mut kernel) = (0, 0);
        for (&pid, &(_, ticks)) in &procs {
            if in_tree(pid, me) {
                ours += ticks;
            } else if in_tree(pid, 2) {
                kernel += ticks;
            }
        }
        CpuSample {
            at: Instant::now(),
            busy,
            steal,
            ours,
            kernel,
        }
    }

    /// CPU that other work used since this sample, in % of the machine
    /// (all CPUs); `None` when /proc could not be read.
    pub(super) fn other_pct(&self) -> Option<OtherCpu> {
        let now = CpuSample::take();
        let tick: f64 = command_line("getconf", &["CLK_TCK"])
            .parse()
            .unwrap_or(100.0);
        let ncpu = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = now.at.duration_since(self.at).as_secs_f64() * tick * ncpu;
        if self.busy == 0 || now.busy == 0 || capacity <= 0.0 {
            return None;
        }
        let other = now.busy.saturating_sub(self.busy) as f64
            - now.ours.saturating_sub(self.ours) as f64
            - now.kernel.saturating_sub(self.kernel) as f64;
        let steal = now.steal.saturating_sub(self.steal) as f64;
        Some(OtherCpu {
            other: (other / capacity * 100.0).clamp(0.0, 100.0),
            steal: (steal / capacity * 100.0).clamp(0.0, 100.0),
        })
    }
}
