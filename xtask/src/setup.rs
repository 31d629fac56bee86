//! `cargo xtask setup`: install what the build, the tests and the benchmarks
//! need (the end-to-end tests' peers too, see peers.rs), idempotently, one
//! line per item. `ensure_setup` is the cheap check the other commands call
//! first.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::peers;
use crate::util::{self, cargo, is_root, probe, run, succeeds};

/// Debian packages every command needs. `libnginx-mod-stream` is handled
/// separately (see [`stream_module_needed`]).
const APT_PACKAGES: &[&str] = &[
    // bpf-linker links the kernel programs against LLVM 22.
    "llvm-22-dev",
    "curl",
    "python3",
    // the venv of the end-to-end tests' Python peers (xtask/src/peers.rs)
    "python3-venv",
    // the benchmark's reverse-proxy baseline
    "nginx",
    "wrk",
    "iproute2",
    "bpftool",
];

/// nginx's stream module: a separate package in Debian 12 (nginx is built
/// `--with-stream=dynamic`).
const STREAM_PACKAGE: &str = "libnginx-mod-stream";

const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Which tool set is wanted: `bench` adds the load generator.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub bench: bool,
}

/// What is present and what is missing, found without installing anything.
struct Survey {
    rustup: bool,
    nightly: bool,
    rust_src: bool,
    apt_present: Vec<String>,
    apt_missing: Vec<String>,
    /// Set when the stream module needs no package of its own.
    stream_note: Option<String>,
    bpf_linker: bool,
    /// `None` when the bench tools were not asked for.
    oha: Option<bool>,
}

impl Survey {
    fn take(want: Want) -> Result<Self> {
        let rustup = succeeds("rustup", &["--version"]);
        let nightly = rustup && nightly_installed();
        let rust_src = nightly && rust_src_installed();

        let mut wanted: Vec<String> = APT_PACKAGES.iter().map(|s| s.to_string()).collect();
        wanted.push(STREAM_PACKAGE.to_string());
        let installed = dpkg_installed(&wanted)?;
        let mut apt_present = Vec::new();
        let mut apt_missing = Vec::new();
        let mut stream_note = None;
        for pkg in wanted {
            if installed.contains(&pkg) {
                apt_present.push(pkg);
            } else if pkg == STREAM_PACKAGE {
                match stream_module_needed() {
                    StreamModule::Package => apt_missing.push(pkg),
                    StreamModule::NotPackaged(why) => stream_note = Some(why),
                }
            } else {
                apt_missing.push(pkg);
            }
        }

        Ok(Survey {
            rustup,
            nightly,
            rust_src,
            apt_present,
            apt_missing,
            stream_note,
            bpf_linker: succeeds("bpf-linker", &["--version"]),
            oha: want.bench.then(|| succeeds("oha", &["--version"])),
        })
    }

    fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.rustup {
            missing.push("rustup".to_string());
        }
        if !self.nightly {
            missing.push("nightly toolchain".to_string());
        }
        if !self.rust_src {
            missing.push("nightly rust-src".to_string());
        }
        missing.extend(self.apt_missing.iter().cloned());
        if !self.bpf_linker {
            missing.push("bpf-linker".to_string());
        }
        if self.oha == Some(false) {
            missing.push("oha".to_string());
        }
        missing
    }
}

/// Check quickly whether anything is missing; run the full setup only then.
pub fn ensure_setup(want: Want) -> Result<()> {
    let survey = Survey::take(want)?;
    let mut missing = survey.missing();
    missing.extend(peers::missing());
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: missing {}; running setup", missing.join(", "));
    setup(want)
}

/// Install whatever is missing, printing one line per item.
pub fn setup(want: Want) -> Result<()> {
    let survey = Survey::take(want)?;

    // Fail before installing anything if apt is needed and we cannot use it.
    if !survey.apt_missing.is_empty() && !is_root() {
        bail!(
            "setup must run as root to install Debian packages: {pkgs}\n\
             re-run `cargo xtask setup` as root, or install them first with \
             `sudo apt-get install {pkgs}`",
            pkgs = survey.apt_missing.join(" "),
        );
    }

    // Rust toolchain for the kernel programs (bpfel-unknown-none needs
    // nightly's build-std, hence rust-src).
    if !survey.rustup {
        bail!(
            "rustup not found on PATH; mesh builds its eBPF programs with a nightly \
             toolchain managed by rustup. Install it from https://rustup.rs \
             (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y) \
             and re-run `cargo xtask setup`"
        );
    }
    if survey.nightly {
        println!("ok: rust nightly toolchain already present");
    } else {
        println!("installing rust nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if survey.rust_src {
        println!("ok: rust-src (nightly) already present");
    } else {
        println!("installing rust-src (nightly)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    // Debian packages.
    for pkg in &survey.apt_present {
        println!("ok: {pkg} already present");
    }
    if let Some(note) = &survey.stream_note {
        println!("ok: nginx stream module: {note}");
    }
    if !survey.apt_missing.is_empty() {
        for pkg in &survey.apt_missing {
            println!("installing {pkg}");
        }
        run(apt_get().arg("update"))?;
        run(apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&survey.apt_missing))?;
    }

    // bpf-linker, built against the system LLVM 22.
    if survey.bpf_linker {
        println!("ok: bpf-linker already present");
    } else {
        println!("installing bpf-linker");
        if !Path::new(LLVM_BIN).join("llvm-config").exists() {
            bail!("{LLVM_BIN}/llvm-config not found: llvm-22-dev is needed to build bpf-linker");
        }
        run(cargo()
            .env("PATH", util::path_with_prefix(Path::new(LLVM_BIN)))
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ]))?;
        if !succeeds("bpf-linker", &["--version"]) {
            bail!(
                "bpf-linker was installed but `bpf-linker --version` still fails; \
                 is {} on PATH?",
                util::cargo_bin_dir().map_or("~/.cargo/bin".into(), |p| p.display().to_string())
            );
        }
    }

    // Load generator for `cargo xtask bench`.
    match survey.oha {
        None => {}
        Some(true) => println!("ok: oha already present"),
        Some(false) => {
            println!("installing oha");
            run(cargo().args(["install", "oha", "--locked"]))?;
        }
    }

    // The real peers of the end-to-end tests, pinned, in target/peers.
    peers::install(apt_get)?;

    Ok(())
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn nightly_installed() -> bool {
    probe(Command::new("rustup").args(["toolchain", "list"])).is_some_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim_start().starts_with("nightly"))
    })
}

fn rust_src_installed() -> bool {
    probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .is_some_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "rust-src" || l.trim().starts_with("rust-src "))
    })
}

/// The subset of `pkgs` that dpkg reports as installed (one dpkg-query call).
fn dpkg_installed(pkgs: &[String]) -> Result<BTreeSet<String>> {
    // dpkg-query exits 1 when some package is unknown but still reports the
    // others, so its exit status is not an error here.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package}\t${Status}\n")
        .args(pkgs)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query: this setup supports Debian 12 (bookworm)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once('\t')?;
            // "install ok installed"; "deinstall ok config-files" etc. are absent.
            (status.split_whitespace().nth(2) == Some("installed"))
                .then(|| name.split(':').next().unwrap_or(name).to_string())
        })
        .collect())
}

enum StreamModule {
    /// nginx loads the stream module from `libnginx-mod-stream`.
    Package,
    /// No package is needed; the string says why.
    NotPackaged(String),
}

/// Called only when `libnginx-mod-stream` is not installed. Debian 12 builds
/// nginx with `--with-stream=dynamic` and ships the module as that package;
/// if nginx has stream compiled in, or the package does not exist, skip it.
fn stream_module_needed() -> StreamModule {
    if let Some(out) = probe(Command::new("nginx").arg("-V")) {
        // nginx -V prints its configure arguments on stderr.
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if text.split_whitespace().any(|a| a == "--with-stream") {
            return StreamModule::NotPackaged("built into nginx".into());
        }
    }
    let candidate =
        probe(Command::new("apt-cache").args(["policy", STREAM_PACKAGE])).and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .map(|c| c.trim().to_string())
            })
        });
    match candidate {
        Some(c) if c != "(none)" => StreamModule::Package,
        _ => StreamModule::NotPackaged(format!(
            "no {STREAM_PACKAGE} package available (apt-cache policy); skipped"
        )),
    }
}
