//! The run's setup: paths, addresses and binaries, the daemon's config and
//! policy, and the commands the clients run with.
use super::*;

/// Paths, addresses and binaries of one benchmark run.
pub(super) struct Env {
    pub(super) dir: PathBuf,
    pub(super) bench_bin: PathBuf,
    pub(super) agent_bin: PathBuf,
    pub(super) meshctl_bin: PathBuf,
    pub(super) config: PathBuf,
    pub(super) admin_socket: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) metrics: SocketAddr,
    pub(super) attach_cgroup: PathBuf,
    pub(super) parent_cgroup: PathBuf,
    pub(super) bpffs_dir: PathBuf,
    pub(super) echo: SocketAddr,
    pub(super) sink: SocketAddr,
    pub(super) nginx_echo: SocketAddr,
    pub(super) nginx_sink: SocketAddr,
}

pub(super) fn prepare(params: &Params) -> Result<Env> {
    let dir = target_dir().join("bench");
    let release = target_dir().join("release");
    let cgroup_root = cgroup2_mount()?;
    let attach_cgroup = cgroup_root.join(CGROUP_NAME);
    ensure!(
        attach_cgroup != cgroup_root && attach_cgroup.parent() == Some(cgroup_root.as_path()),
        "refusing to attach anywhere but a child cgroup of {}",
        cgroup_root.display()
    );
    let parent_cgroup = attach_cgroup.join("agents");
    let bpffs_dir = PathBuf::from(BPFFS_DIR);

    // sun_path holds 108 bytes; fall back to /run for deep checkouts.
    let mut admin_socket = dir.join("admin.sock");
    if admin_socket.as_os_str().len() >= 100 {
        admin_socket = PathBuf::from("/run/mesh-bench/admin.sock");
    }
    let listen_port = free_port_pair()?;
    let metrics: SocketAddr = SocketAddr::new([127, 0, 0, 1].into(), free_port("127.0.0.1")?);
    let env = Env {
        bench_bin: release.join("mesh-bench"),
        agent_bin: release.join("mesh-agent"),
        meshctl_bin: release.join("meshctl"),
        config: dir.join("config.yaml"),
        data_dir: dir.join("data"),
        admin_socket,
        metrics,
        attach_cgroup,
        parent_cgroup,
        bpffs_dir,
        echo: SocketAddr::new([127, 0, 0, 2].into(), free_port("127.0.0.2")?),
        sink: SocketAddr::new([127, 0, 0, 2].into(), free_port("127.0.0.2")?),
        nginx_echo: SocketAddr::new([127, 0, 0, 3].into(), free_port("127.0.0.3")?),
        nginx_sink: SocketAddr::new([127, 0, 0, 3].into(), free_port("127.0.0.3")?),
        dir,
    };

    // What an interrupted run may have left behind: the daemon's pins and
    // cgroups (by their fixed names). The config is rewritten first so that
    // `mesh-agent cleanup` has one to read.
    std::fs::create_dir_all(&env.dir).with_context(|| format!("create {}", env.dir.display()))?;
    write_config(&env, listen_port)?;
    if env.bpffs_dir.exists() || env.attach_cgroup.exists() {
        println!("bench: removing what a previous run left behind");
        env.footprint().remove();
    }
    let _ = std::fs::remove_dir_all(&env.dir);
    std::fs::create_dir_all(env.dir.join("policies"))
        .with_context(|| format!("create {}", env.dir.display()))?;
    if let Some(sock_dir) = env.admin_socket.parent() {
        std::fs::create_dir_all(sock_dir)
            .with_context(|| format!("create {}", sock_dir.display()))?;
    }
    write_config(&env, listen_port)?;
    std::fs::write(
        env.dir.join("policies").join("bench.yaml"),
        format!(
            "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {AGENT} }}\nagent: {AGENT}\n\
             egress:\n  default: deny\n  allow: [\"127.0.0.2:*\"]\n"
        ),
    )
    .context("write the bench policy")?;
    for bin in [&env.bench_bin, &env.agent_bin, &env.meshctl_bin] {
        ensure!(bin.exists(), "{} missing after the build", bin.display());
    }
    println!(
        "bench: {} repetition(s) of {} s per load; echo {} sink {}, nginx {} / {}, mesh listener port {listen_port}; files in {}",
        params.reps,
        params.seconds,
        env.echo,
        env.sink,
        env.nginx_echo,
        env.nginx_sink,
        env.dir.display()
    );
    Ok(env)
}

pub(super) fn write_config(env: &Env, listen_port: u16) -> Result<()> {
    DaemonConfig {
        header: vec!["Written by `cargo xtask bench`.".into()],
        cgroup_root: None,
        attach_cgroup: env.attach_cgroup.clone(),
        parent_cgroup: env.parent_cgroup.clone(),
        bpffs_dir: env.bpffs_dir.clone(),
        listen_port,
        admin_socket: env.admin_socket.clone(),
        admin_groups: None,
        metrics: env.metrics,
        data_dir: env.data_dir.clone(),
        policy_dir: env.dir.join("policies"),
    }
    .write(&env.config)?;
    Ok(())
}

/// `[setpriv --pdeathsig TERM --] sh -c 'ulimit -n N; exec "$0" "$@"' PROGRAM
/// ARGS…`: the same process (pid) as PROGRAM, with a file descriptor limit fit
/// for 1,000 connections (the hard limit when N is above it and raising it is
/// not permitted, as in containers without CAP_SYS_RESOURCE), and sent
/// SIGTERM if this xtask dies without running its guards (killed from
/// outside), so nothing it started outlives it.
pub(super) fn with_nofile(program: &Path, args: &[&str]) -> Command {
    let script = format!(
        "ulimit -n {NOFILE} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
    );
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut cmd = if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "TERM", "--", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    cmd.arg("-c").arg(script).arg(program).args(args);
    cmd
}

impl Env {
    /// The daemon's pins and cgroups: `mesh-agent cleanup`, the pin
    /// directory, the cgroups (and anything left in them).
    pub(super) fn footprint(&self) -> Footprint {
        Footprint {
            agent_bin: self.agent_bin.clone(),
            config: self.config.clone(),
            bpffs_dir: self.bpffs_dir.clone(),
            attach_cgroup: self.attach_cgroup.clone(),
            show_output: false,
        }
    }

    pub(super) fn bench_command(&self, args: &[&str]) -> Command {
        with_nofile(&self.bench_bin, args)
    }

    /// The load tool for `target`: governed through `meshctl exec` for the
    /// mesh targets, a plain process otherwise.
    pub(super) fn client(&self, target: Target, args: &[&str]) -> Command {
        match target.relay() {
            None => self.bench_command(args),
            Some(_) => self.governed(args),
        }
    }

    /// `meshctl exec --agent bench -- mesh-bench ARGS…`
    pub(super) fn governed(&self, args: &[&str]) -> Command {
        self.governed_program(&self.bench_bin, args)
    }

    /// `meshctl exec --agent bench -- PROGRAM ARGS…`
    pub(super) fn governed_program(&self, program: &Path, args: &[&str]) -> Command {
        let socket = self.admin_socket.to_string_lossy().into_owned();
        let program = program.to_string_lossy().into_owned();
        let mut full = vec![
            "--socket", &socket, "exec", "--agent", AGENT, "--", &program,
        ];
        full.extend_from_slice(args);
        with_nofile(&self.meshctl_bin, &full)
    }

    pub(super) fn echo_for(&self, target: Target) -> SocketAddr {
        if target == Target::Nginx {
            self.nginx_echo
        } else {
            self.echo
        }
    }

    pub(super) fn sink_for(&self, target: Target) -> SocketAddr {
        if target == Target::Nginx {
            self.nginx_sink
        } else {
            self.sink
        }
    }
}
