//! cgroup v2 filesystem operations: ids, levels, creation, membership.
//!
//! A cgroup's id (what the kernel programs see from
//! `bpf_get_current_ancestor_cgroup_id`) is the inode number of its directory
//! in the cgroup2 filesystem.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {0} does not exist")]
    NotFound(PathBuf),
    #[error("{path} is not inside the governed subtree {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The id of the cgroup at `path` (an absolute path in the cgroup2 mount).
pub fn id_of(path: &Path) -> Result<u64, CgroupError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(m.ino()),
        Ok(_) => Err(CgroupError::NotFound(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(CgroupError::NotFound(path.to_owned()))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The cgroup level of `path` below the cgroup2 mount `root` (root is 0).
pub fn level_of(root: &Path, path: &Path) -> Result<u32, CgroupError> {
    let rel = path.strip_prefix(root).map_err(|_| CgroupError::Outside {
        path: path.to_owned(),
        root: root.to_owned(),
    })?;
    Ok(rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32)
}

/// Resolves a path given by an operator: absolute in the cgroup2 mount, or
/// relative to it (`/system.slice/x.service` is taken as relative when it is
/// not already under the mount). The result must lie within `within`.
pub fn resolve(cgroup_root: &Path, within: &Path, given: &str) -> Result<PathBuf, CgroupError> {
    let given_path = Path::new(given);
    let path = if given_path.starts_with(cgroup_root) {
        given_path.to_owned()
    } else {
        cgroup_root.join(given.trim_start_matches('/'))
    };
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(CgroupError::Outside {
            path,
            root: within.to_owned(),
        });
    }
    if !path.starts_with(within) {
        return Err(CgroupError::Outside {
            path,
            root: within.to_owned(),
        });
    }
    id_of(&path)?;
    Ok(path)
}

/// Creates `path` (and missing parents).
pub fn create(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(io_err(path))
}

/// Removes an empty cgroup directory; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Moves process `pid` into the cgroup at `path`.
pub fn move_pid(path: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = path.join("cgroup.procs");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(io_err(&procs))?;
    f.write_all(pid.to_string().as_bytes())
        .map_err(io_err(&procs))
}

/// Freezes (`cgroup.freeze` 1) or thaws (0) the cgroup at `path` and its
/// subtree; the kernel reports the reached state in `cgroup.events`.
pub fn set_frozen(path: &Path, frozen: bool) -> Result<(), CgroupError> {
    let file = path.join("cgroup.freeze");
    // Never created: a cgroup without the file (the root) is an error.
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|mut f| f.write_all(if frozen { b"1" } else { b"0" }))
        .map_err(io_err(&file))
}

/// Finds the path of cgroup `id` below `within` (depth-first, bounded depth).
/// Used for display only; ids are what the kernel and the maps use.
pub fn find_path(within: &Path, id: u64) -> Option<PathBuf> {
    fn walk(dir: &Path, id: u64, depth: u32) -> Option<PathBuf> {
        if fs::metadata(dir).ok()?.ino() == id {
            return Some(dir.to_owned());
        }
        if depth == 0 {
            return None;
        }
        for entry in fs::read_dir(dir).ok()?.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Some(found) = walk(&entry.path(), id, depth - 1) {
                    return Some(found);
                }
            }
        }
        None
    }
    walk(within, id, mesh_common::MAX_CGROUP_DEPTH)
}

/// Every cgroup below `within` (excluding itself), as (path, id).
pub fn descendants(within: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![(within.to_owned(), 0u32)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Ok(id) = id_of(&path) {
                    out.push((path.clone(), id));
                }
                if depth < mesh_common::MAX_CGROUP_DEPTH {
                    stack.push((path, depth + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_counts_components_below_root() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(level_of(root, root).ok(), Some(0));
        assert_eq!(
            level_of(root, Path::new("/sys/fs/cgroup/a/b")).ok(),
            Some(2)
        );
        assert!(level_of(root, Path::new("/tmp/a")).is_err());
    }

    #[test]
    fn resolve_rejects_escape_and_outside() {
        let root = Path::new("/nonexistent-cg");
        let within = Path::new("/nonexistent-cg/mesh");
        assert!(matches!(
            resolve(root, within, "/mesh/../etc"),
            Err(CgroupError::Outside { .. })
        ));
        assert!(matches!(
            resolve(root, within, "/other"),
            Err(CgroupError::Outside { .. })
        ));
        assert!(matches!(
            resolve(root, within, "/mesh/x"),
            Err(CgroupError::NotFound(_))
        ));
    }
}
