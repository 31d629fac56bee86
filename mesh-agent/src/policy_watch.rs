//! Hot reload of `policy_dir` (ARCHITECTURE.md 5.2): the directory is
//! watched and reloaded whole on change or on `meshctl policy reload`; a
//! valid set is swapped into the [`PolicyStore`], an invalid one changes
//! nothing and its errors are logged and returned.
//!
//! Watching is a cheap poll, not inotify ([`crate::jobs::watch_policy_dir`]):
//! every [`POLICY_POLL_INTERVAL`] the directory's policy files are listed and
//! stat'ed (name, symlink target, size, mtime, inode: a few syscalls per
//! file) and compared with the fingerprint of the last load. Why a poll:
//! - ConfigMap mounts swap a `..data` symlink; inotify on the directory sees
//!   that rename, but not edits behind symlinks pointing elsewhere (a
//!   hand-made symlink to a file outside the directory), and stat through the
//!   link sees both;
//! - it works the same on every filesystem (overlay, NFS, FUSE, where
//!   inotify is partial or absent) and survives the directory being removed
//!   and created again, which an inotify watch does not;
//! - no event queue to overflow, no watch descriptors to re-arm, and no new
//!   dependency. The cost, a directory listing twice a second, is nothing
//!   next to the proxy's work, and 500 ms plus the settle time keeps a
//!   reload within the documented second.
//!
//! Bursts (an editor's write-rename, a ConfigMap update touching several
//! links) are debounced: after a change the directory must stay unchanged for
//! [`POLICY_SETTLE_TIME`] before it is loaded.
//!
//! [`POLICY_POLL_INTERVAL`]: crate::config::POLICY_POLL_INTERVAL
//! [`POLICY_SETTLE_TIME`]: crate::config::POLICY_SETTLE_TIME
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    bpf::{KernelPolicy, PolicyMaps},
    policy::{PolicyErrors, PolicySet, PolicyStore},
    records::unix_ms,
    state::{selectors::apply_policy_selectors, Governor},
};

/// What the watcher compares between polls: one entry per policy file (and
/// per symlink, with its target), sorted by name. `None`: the directory could
/// not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Option<Vec<FileStamp>>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileStamp {
    name: String,
    /// `readlink` of a symlink (ConfigMap's `..data` and the files pointing
    /// through it).
    link: Option<PathBuf>,
    /// Of what the name resolves to; `None` when it dangles.
    target: Option<(u64, u64, i64, i64, u64)>,
}

impl Fingerprint {
    /// Stats every `*.yaml` / `*.yml` file of `dir` and every symlink in it
    /// (hidden ones included: `..data`). Cheap: no file is read.
    pub fn of(dir: &Path) -> Fingerprint {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Fingerprint(None);
        };
        let mut stamps = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_symlink = entry.file_type().is_ok_and(|t| t.is_symlink());
            let is_policy = name.ends_with(".yaml") || name.ends_with(".yml");
            if !is_symlink && !is_policy {
                continue;
            }
            let path = entry.path();
            stamps.push(FileStamp {
                link: is_symlink.then(|| std::fs::read_link(&path).ok()).flatten(),
                target: std::fs::metadata(&path)
                    .ok()
                    .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size())),
                name,
            });
        }
        stamps.sort();
        Fingerprint(Some(stamps))
    }
}

/// The policy to start with: `dir` loaded whole, or no policy at all (every
/// governed agent denied) when the directory does not exist.
pub fn load_at_start(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    if !dir.exists() {
        warn!(
            policy_dir = %dir.display(),
            "policy directory missing: every governed agent is denied all egress"
        );
        return Ok(PolicySet::empty());
    }
    let p = PolicySet::load_dir(dir)?;
    info!(agents = p.agents().count(), dir = %dir.display(), "policies loaded");
    Ok(p)
}

/// Writes the UDP and ingress entries of `policies` to the kernel. A
/// failure is logged: entries the new set adds may be missing (refused)
/// and entries it drops may stay until the next successful write.
pub fn apply_kernel_policy(maps: &PolicyMaps, policies: &PolicySet) {
    match maps.apply(&KernelPolicy::of(policies)) {
        Ok(()) => info!("kernel policy (udp, ingress) written"),
        Err(e) => warn!(error = %e, "writing the kernel policy (udp, ingress)"),
    }
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub generation: u64,
    pub agents: Vec<String>,
}

/// Reloads `policy_dir` into the store, on demand or when it changes.
pub struct PolicyReloader {
    dir: PathBuf,
    store: Arc<PolicyStore>,
    /// Applies the new set's selectors after each successful reload.
    governor: Option<Arc<Governor>>,
    /// Receives the parts of each new set the kernel enforces alone.
    kernel: Option<Arc<PolicyMaps>>,
    /// Held for the whole of a reload, so that reloads never interleave.
    state: Mutex<LoadState>,
}

struct LoadState {
    /// Of the directory as last attempted (loaded or rejected), so that the
    /// watcher reloads on a change and not again for a rejected one.
    fingerprint: Fingerprint,
    /// When the policy in force was loaded.
    loaded_unix_ms: u64,
}

impl PolicyReloader {
    /// `fingerprint` is of the directory as it was just before the policy in
    /// `store` was loaded from it.
    pub fn new(
        dir: PathBuf,
        store: Arc<PolicyStore>,
        governor: Option<Arc<Governor>>,
        fingerprint: Fingerprint,
    ) -> PolicyReloader {
        PolicyReloader {
            dir,
            store,
            governor,
            kernel: None,
            state: Mutex::new(LoadState {
                fingerprint,
                loaded_unix_ms: unix_ms(SystemTime::now()),
            }),
        }
    }

    /// Also writes each reloaded set's UDP and ingress entries to `maps`.
    pub fn with_kernel_policy(mut self, maps: Arc<PolicyMaps>) -> PolicyReloader {
        self.kernel = Some(maps);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// When the policy in force was loaded (Unix ms).
    pub fn loaded_unix_ms(&self) -> u64 {
        self.lock().loaded_unix_ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the directory differs from what was last loaded or rejected.
    pub fn changed(&self) -> bool {
        Fingerprint::of(&self.dir) != self.lock().fingerprint
    }

    /// Parses and compiles the whole directory now; puts it in force if it
    /// is valid, else keeps the policy in force and returns every error.
    /// `trigger` says why, for the log. Blocking (file system).
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, PolicyErrors> {
        let mut state = self.lock();
        // Taken before reading: a change made while loading is seen by the
        // next poll.
        state.fingerprint = Fingerprint::of(&self.dir);
        let next = match PolicySet::load_dir(&self.dir) {
            Ok(next) => next,
            Err(errors) => {
                warn!(
                    trigger,
                    dir = %self.dir.display(),
                    errors = errors.0.len(),
                    generation = self.store.generation(),
                    "policy reload rejected; the policy in force stays"
                );
                for error in &errors.0 {
                    warn!("{error}");
                }
                return Err(errors);
            }
        };
        // What servers said about their tools (`tools/list` annotations,
        // for `trust_annotations`) is not policy: it carries over.
        let next = next.with_annotations_from(&self.store.snapshot());
        let agents: Vec<String> = next.agents().map(str::to_owned).collect();
        let generation = self.store.replace(next);
        state.loaded_unix_ms = unix_ms(SystemTime::now());
        info!(
            trigger,
            generation,
            agents = %agents.join(","),
            dir = %self.dir.display(),
            "policy reloaded"
        );
        if let Some(maps) = &self.kernel {
            // Under the reload lock, so two reloads never write interleaved.
            apply_kernel_policy(maps, &self.store.snapshot());
        }
        drop(state);
        if let Some(governor) = &self.governor {
            apply_policy_selectors(governor, &self.store);
        }
        Ok(Reloaded { generation, agents })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::jobs::watch_policy_dir as watch;

    const VALID_A: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n";
    const VALID_B: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: b\n";

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "mesh-policy-watch-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn reloader(dir: &Path) -> PolicyReloader {
        let fingerprint = Fingerprint::of(dir);
        let initial = PolicySet::load_dir(dir).unwrap();
        PolicyReloader::new(
            dir.to_owned(),
            Arc::new(PolicyStore::new(initial)),
            None,
            fingerprint,
        )
    }

    #[test]
    fn a_valid_change_is_swapped_in_and_an_invalid_one_keeps_the_old() {
        let dir = TempDir::new("swap");
        std::fs::write(dir.0.join("a.yaml"), VALID_A).unwrap();
        let r = reloader(&dir.0);
        assert!(!r.changed());
        std::fs::write(dir.0.join("b.yml"), VALID_B).unwrap();
        assert!(r.changed());
        let before = r.store.snapshot();
        let ok = r.reload("test").unwrap();
        assert_eq!(ok.generation, 2);
        assert_eq!(ok.agents, vec!["a", "b"]);
        // Tool annotations learned under the old set carry over.
        assert!(Arc::ptr_eq(
            before.annotations(),
            r.store.snapshot().annotations()
        ));
        assert!(!r.changed());

        std::fs::write(
            dir.0.join("c.yaml"),
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: c\nbogus: 1\n",
        )
        .unwrap();
        let errors = r.reload("test").unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("c.yaml:4:1:"), "{text}");
        assert_eq!(r.generation(), 2);
        assert!(r.store.snapshot().has_agent("b"));
        assert!(!r.store.snapshot().has_agent("c"));
        // A rejected state is not retried until it changes again.
        assert!(!r.changed());
    }

    #[test]
    fn the_fingerprint_sees_edits_renames_deletes_and_configmap_flips() {
        let dir = TempDir::new("fp");
        let d = &dir.0;
        std::fs::write(d.join("a.yaml"), VALID_A).unwrap();
        let mut last = Fingerprint::of(d);
        let mut step = |what: &str, change: &dyn Fn()| {
            change();
            let now = Fingerprint::of(d);
            assert_ne!(now, last, "{what} not seen");
            last = now;
        };
        // Same size, new content, written through a rename (new inode).
        step("rename over", &|| {
            std::fs::write(d.join(".a.tmp"), VALID_B).unwrap();
            std::fs::rename(d.join(".a.tmp"), d.join("a.yaml")).unwrap();
        });
        step("in-place edit", &|| {
            std::fs::write(
                d.join("a.yaml"),
                "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: zz\n",
            )
            .unwrap()
        });
        step("rename", &|| {
            std::fs::rename(d.join("a.yaml"), d.join("b.yml")).unwrap()
        });
        step("delete", &|| std::fs::remove_file(d.join("b.yml")).unwrap());
        // ConfigMap layout: a.yaml -> ..data/a.yaml, ..data -> ..v1.
        step("configmap v1", &|| {
            std::fs::create_dir(d.join("..v1")).unwrap();
            std::fs::write(d.join("..v1/a.yaml"), VALID_A).unwrap();
            std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
        });
        step("configmap flip", &|| {
            std::fs::create_dir(d.join("..v2")).unwrap();
            std::fs::write(d.join("..v2/a.yaml"), VALID_B).unwrap();
            std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
            std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        });
        // Files that are not policies do not count.
        std::fs::write(d.join("README.md"), "x").unwrap();
        assert_eq!(Fingerprint::of(d), last);
    }

    #[test]
    fn a_configmap_flip_reloads_the_new_content() {
        let dir = TempDir::new("cm");
        let d = &dir.0;
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/p.yaml"), VALID_A).unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p.yaml", d.join("p.yaml")).unwrap();
        let r = reloader(d);
        assert!(r.store.snapshot().has_agent("a"));
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/p.yaml"), VALID_B).unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert!(r.changed());
        assert_eq!(r.reload("test").unwrap().agents, vec!["b"]);
    }

    #[tokio::test]
    async fn the_watcher_reloads_a_change_on_its_own() {
        let dir = TempDir::new("watch");
        std::fs::write(dir.0.join("a.yaml"), VALID_A).unwrap();
        let r = Arc::new(reloader(&dir.0));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(watch(r.clone(), rx));
        std::fs::write(dir.0.join("b.yaml"), VALID_B).unwrap();
        // Bounded wait, not a timing assert: the reload is expected well
        // within a second.
        let mut reloaded = false;
        for _ in 0..100 {
            if r.store.snapshot().has_agent("b") {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tx.send(true);
        let _ = task.await;
        assert!(reloaded, "the watcher did not reload");
        assert_eq!(r.generation(), 2);
    }
}
