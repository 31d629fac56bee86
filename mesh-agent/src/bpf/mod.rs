//! The only module that talks to the kernel's BPF objects: load the embedded
//! programs, pin maps and links under `<bpffs_dir>/v<LAYOUT_VERSION>/`, attach
//! to the attach cgroup, and hand out typed map handles.
//!
//! Programs mirror `mesh-ebpf/src/`: [`connect`] (connect4/connect6),
//! [`sendmsg`] (sendmsg4/6), [`bind`] (bind4/6), [`sock_create`],
//! [`sock_ops`], [`cgroup_skb`]; [`maps`] wraps the shared maps,
//! [`policy_maps`] the policy the kernel enforces alone (UDP, ingress), and
//! [`events`] reads the ring buffer.
pub mod bind;
pub mod cgroup_skb;
pub mod connect;
pub mod events;
pub mod maps;
pub mod policy_maps;
pub mod sendmsg;
pub mod sock_create;
pub mod sock_ops;

use std::{
    fs,
    net::SocketAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        CgroupAttachMode, CgroupSockAddr,
    },
    Ebpf, EbpfLoader,
};
use mesh_common::{MeshConfig, LAYOUT_VERSION};
use tracing::{info, warn};

use crate::config::PROC_MOUNTS;

pub use maps::{GovernanceMaps, KernelMaps, OrigDstSource};
pub use policy_maps::{KernelPolicy, PolicyMaps};

/// The compiled kernel programs, embedded at build time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh"));

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("loading the kernel programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("program {0} missing from the embedded object")]
    MissingProgram(&'static str),
    #[error("map {0} missing from the embedded object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("link {path}: {message}")]
    Link { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// What the loader needs from the daemon's configuration.
pub struct BpfSettings<'a> {
    pub bpffs_dir: &'a Path,
    pub cgroup_root: &'a Path,
    pub attach_cgroup: &'a Path,
    pub listen: &'a [SocketAddr],
}

/// Loaded, attached, pinned programs and the handles the daemon uses.
pub struct LoadedBpf {
    pub maps: std::sync::Arc<KernelMaps>,
    pub policy_maps: std::sync::Arc<PolicyMaps>,
    pub events: events::EventReader,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Keeps the programs' user-space handles; the pinned links keep them
    /// attached after the daemon exits.
    _ebpf: Ebpf,
}

/// `<bpffs_dir>/v<LAYOUT_VERSION>`: maps are pinned here by name, links under
/// `links/`.
pub fn pin_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join(format!("v{LAYOUT_VERSION}"))
}

fn link_pin_path(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join("links").join(program)
}

/// Loads the programs (reusing pinned maps, so tags, quarantine and counters
/// carry over), writes the redirect target, attaches to the attach cgroup and
/// pins the links, replacing those of a previous daemon without a gap.
pub fn load(settings: &BpfSettings<'_>) -> Result<LoadedBpf, BpfError> {
    ensure_bpffs(settings.bpffs_dir)?;
    let pins = pin_dir(settings.bpffs_dir);
    fs::create_dir_all(pins.join("links")).map_err(|source| BpfError::Io {
        path: pins.clone(),
        source,
    })?;

    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins)
        .load(EBPF_OBJECT)?;
    // The logger must exist before the programs load (it owns the log ring
    // buffer they reference).
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(e) => {
            warn!(error = %e, "eBPF logging unavailable");
            None
        }
    };

    let attach_level = crate::cgroup::level_of(settings.cgroup_root, settings.attach_cgroup)
        .map_err(|e| BpfError::Config(e.to_string()))?;
    let mesh_config = redirect_target(settings.listen, attach_level)?;
    let maps = KernelMaps::take(&mut ebpf, &mesh_config)?;
    let policy_maps = PolicyMaps::take(&mut ebpf)?;
    let events = events::EventReader::take(&mut ebpf)?;

    let cgroup = fs::File::open(settings.attach_cgroup).map_err(|source| BpfError::Io {
        path: settings.attach_cgroup.to_owned(),
        source,
    })?;
    let mut links = Vec::new();
    // The refusals first (sockets, binds, UDP), the redirect last: a
    // half-attached set never lets through what a full one would refuse.
    links.push(sock_create::attach(&mut ebpf, cgroup.as_fd())?);
    links.extend(bind::attach(&mut ebpf, cgroup.as_fd())?);
    links.extend(sendmsg::attach(&mut ebpf, cgroup.as_fd())?);
    links.extend(connect::attach(&mut ebpf, cgroup.as_fd())?);
    links.push(sock_ops::attach(&mut ebpf, cgroup.as_fd())?);
    links.extend(cgroup_skb::attach(&mut ebpf, cgroup.as_fd())?);
    for (name, link) in links {
        replace_pinned_link(&pins, name, link)?;
    }
    info!(
        attach_cgroup = %settings.attach_cgroup.display(),
        pin_dir = %pins.display(),
        "kernel programs attached"
    );
    Ok(LoadedBpf {
        maps: std::sync::Arc::new(maps),
        policy_maps: std::sync::Arc::new(policy_maps),
        events,
        logger,
        _ebpf: ebpf,
    })
}

/// Finds program `name` as type `P`, lets `attach` load and attach it, and
/// returns its link as an fd link, ready to pin.
fn load_and_attach<P, L>(
    ebpf: &mut Ebpf,
    name: &'static str,
    attach: impl FnOnce(&mut P) -> Result<L, aya::programs::ProgramError>,
) -> Result<(&'static str, FdLink), BpfError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or(BpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| BpfError::Program { name, source })?;
    let link = attach(prog).map_err(|source| BpfError::Program { name, source })?;
    let link = FdLink::try_from(link).map_err(|e| BpfError::Link {
        path: name.into(),
        message: e.to_string(),
    })?;
    Ok((name, link))
}

/// Loads and attaches the cgroup/sock_addr programs `names` (each knows its
/// hook, connect4, sendmsg6..., from its ELF section).
fn attach_sock_addr<const N: usize>(
    ebpf: &mut Ebpf,
    cgroup: std::os::fd::BorrowedFd<'_>,
    names: [&'static str; N],
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    names
        .into_iter()
        .map(|name| {
            load_and_attach(ebpf, name, |prog: &mut CgroupSockAddr| {
                prog.load()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                prog.take_link(id)
            })
        })
        .collect()
}

/// Cgroup programs are attached as bpf_links, which the kernel always treats
/// as multi-attach (link_create takes no flags: hence `CgroupAttachMode::Single`
/// in the program handles). The new link is already attached, so detaching the previous
/// daemon's link leaves no window in which governed connects go around the mesh.
fn replace_pinned_link(pins: &Path, name: &'static str, link: FdLink) -> Result<(), BpfError> {
    let path = link_pin_path(pins, name);
    if path.exists() {
        match PinnedLink::from_pin(&path) {
            Ok(old) => {
                let old = old.unpin().map_err(|e| BpfError::Link {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                drop(old);
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "stale link pin; removing");
                let _ = fs::remove_file(&path);
            }
        }
    }
    link.pin(&path).map_err(|e| BpfError::Link {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(())
}

/// Detaches the programs and removes every pin (maps included): uninstall.
/// Governed processes then connect directly again.
pub fn cleanup(bpffs_dir: &Path) -> Result<(), BpfError> {
    let pins = pin_dir(bpffs_dir);
    if !pins.exists() {
        return Ok(());
    }
    fs::remove_dir_all(&pins).map_err(|source| BpfError::Io {
        path: pins.clone(),
        source,
    })?;
    let _ = fs::remove_dir(bpffs_dir);
    Ok(())
}

fn redirect_target(listen: &[SocketAddr], attach_level: u32) -> Result<MeshConfig, BpfError> {
    let mut cfg = MeshConfig {
        listen_v4: 0,
        listen_v4_port: 0,
        listen_v6_port: 0,
        listen_v6: [0; 4],
        attach_level,
        daemon_tgid: std::process::id(),
    };
    for addr in listen {
        match addr {
            SocketAddr::V4(a) => {
                cfg.listen_v4 = u32::from_ne_bytes(a.ip().octets());
                cfg.listen_v4_port = a.port();
            }
            SocketAddr::V6(a) => {
                cfg.listen_v6 = crate::addr::ip6_words(*a.ip());
                cfg.listen_v6_port = a.port();
            }
        }
    }
    if cfg.listen_v4_port == 0 && cfg.listen_v6_port == 0 {
        return Err(BpfError::Config("no listen address".into()));
    }
    Ok(cfg)
}

/// Mounts bpffs at the mount point above `bpffs_dir` when none is mounted.
fn ensure_bpffs(bpffs_dir: &Path) -> Result<(), BpfError> {
    let mounts = fs::read_to_string(PROC_MOUNTS).map_err(|source| BpfError::Io {
        path: PROC_MOUNTS.into(),
        source,
    })?;
    let covered = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, mount_point, fstype) = (fields.next(), fields.next(), fields.next());
        fstype == Some("bpf") && mount_point.is_some_and(|m| bpffs_dir.starts_with(m))
    });
    if covered {
        return Ok(());
    }
    let mount_point = Path::new("/sys/fs/bpf");
    if !bpffs_dir.starts_with(mount_point) {
        return Err(BpfError::Bpffs(format!(
            "{} is not on a bpf filesystem; mount one there or use a path under /sys/fs/bpf",
            bpffs_dir.display()
        )));
    }
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: plain mount(2) with NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(BpfError::Bpffs(format!(
            "mounting bpffs at /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        )));
    }
    info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}
