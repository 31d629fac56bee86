use mesh_common::agent_id;

use super::*;
use crate::{bpf::maps::MemoryMaps, cgroup::CgroupError};

pub(super) fn governor() -> (tempfile_dir::Dir, Governor, Arc<MemoryMaps>) {
    let dir = tempfile_dir::Dir::new();
    let root = dir.path().to_owned();
    let attach = root.join("attach");
    std::fs::create_dir_all(attach.join("agents")).unwrap();
    let maps = Arc::new(MemoryMaps::default());
    let layout = CgroupLayout {
        cgroup_root: root.clone(),
        attach_cgroup: attach.clone(),
        parent_cgroup: attach.join("agents"),
    };
    let g = Governor::new(maps.clone(), layout).unwrap();
    (dir, g, maps)
}

/// A throwaway directory standing in for a cgroup2 mount.
mod tempfile_dir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("mesh-state-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn tag_quarantine_release_untag() {
    let (dir, g, maps) = governor();
    let cg = dir.path().join("attach/agents/a");
    std::fs::create_dir_all(&cg).unwrap();
    let (path, id) = g.tag(cg.to_str().unwrap(), "support").unwrap();
    assert_eq!(path, cg);
    assert_eq!(
        g.agent_name(agent_id(b"support")).as_deref(),
        Some("support")
    );

    assert_eq!(g.set_quarantine("support", true).unwrap(), vec![id]);
    assert!(maps.tags.lock().unwrap()[&id].quarantined());
    let status = g.status(true).unwrap();
    assert!(status[0].quarantined);

    g.set_quarantine("support", false).unwrap();
    assert!(!maps.tags.lock().unwrap()[&id].quarantined());

    maps.counters.lock().unwrap().insert(
        id,
        CgroupCounters {
            connects: 3,
            ..Default::default()
        },
    );
    g.untag(cg.to_str().unwrap()).unwrap();
    assert!(maps.tags.lock().unwrap().is_empty());
    // Totals survive the untag.
    let status = g.status(true).unwrap();
    assert_eq!(status[0].totals.connects, 3);
    assert!(status[0].cgroups.is_empty());
}

#[test]
fn errors_name_what_is_wrong() {
    let (dir, g, _) = governor();
    let missing = dir.path().join("attach/nope");
    let err = g.tag(missing.to_str().unwrap(), "a").unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains("attach/nope"), "{err}");
    assert!(matches!(
        g.tag("/attach", "bad name"),
        Err(StateError::BadAgentName(_))
    ));
    assert!(matches!(
        g.set_quarantine("ghost", false),
        Err(StateError::UnknownAgent(_))
    ));
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    assert!(matches!(
        g.tag(outside.to_str().unwrap(), "a"),
        Err(StateError::Cgroup(CgroupError::Outside { .. }))
    ));
}

#[test]
fn retag_by_another_agent_is_refused() {
    let (dir, g, _) = governor();
    let cg = dir.path().join("attach/agents/b");
    std::fs::create_dir_all(&cg).unwrap();
    g.tag(cg.to_str().unwrap(), "one").unwrap();
    assert!(matches!(
        g.tag(cg.to_str().unwrap(), "two"),
        Err(StateError::AlreadyTagged(..))
    ));
    // Same agent again is idempotent.
    g.tag(cg.to_str().unwrap(), "one").unwrap();
}

#[test]
fn child_cgroup_quarantine_inherits_the_agent() {
    let (dir, g, maps) = governor();
    let parent = dir.path().join("attach/agents/p");
    let child = parent.join("child");
    std::fs::create_dir_all(&child).unwrap();
    g.tag(parent.to_str().unwrap(), "parent-agent").unwrap();
    let ids = g.set_quarantine(child.to_str().unwrap(), true).unwrap();
    let tag = maps.tags.lock().unwrap()[&ids[0]];
    assert!(tag.quarantined());
    assert_eq!(tag.agent_id, agent_id(b"parent-agent"));
}

#[test]
fn new_cgroups_of_a_quarantined_agent_are_quarantined() {
    let (dir, g, maps) = governor();
    let first = dir.path().join("attach/agents/q1");
    std::fs::create_dir_all(&first).unwrap();
    g.tag(first.to_str().unwrap(), "loop").unwrap();
    g.set_quarantine("loop", true).unwrap();
    let later = g.create_exec_cgroup("loop").unwrap();
    let id = crate::cgroup::id_of(&later).unwrap();
    assert!(maps.tags.lock().unwrap()[&id].quarantined());
    g.set_quarantine("loop", false).unwrap();
    assert!(!maps.tags.lock().unwrap()[&id].quarantined());
    g.finish_exec_cgroup(later.to_str().unwrap()).unwrap();
    assert!(!later.exists());
}

#[test]
fn tags_of_removed_cgroups_are_collected_and_their_counters_kept() {
    let (dir, g, maps) = governor();
    let gone = dir.path().join("attach/agents/gone");
    let kept = dir.path().join("attach/agents/kept");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    let (_, gone_id) = g.tag(gone.to_str().unwrap(), "gc").unwrap();
    g.tag(kept.to_str().unwrap(), "gc").unwrap();
    maps.counters.lock().unwrap().insert(
        gone_id,
        CgroupCounters {
            connects: 5,
            ..Default::default()
        },
    );
    std::fs::remove_dir(&gone).unwrap();
    assert_eq!(g.collect_garbage().unwrap(), 1);
    assert_eq!(maps.tags.lock().unwrap().len(), 1);
    let status = g.status(true).unwrap();
    assert_eq!(status[0].cgroups.len(), 1);
    assert_eq!(status[0].totals.connects, 5);
    assert_eq!(g.collect_garbage().unwrap(), 0);
}

#[test]
fn names_are_recovered_from_the_maps() {
    let (dir, g, maps) = governor();
    let cg = dir.path().join("attach/agents/r");
    std::fs::create_dir_all(&cg).unwrap();
    g.tag(cg.to_str().unwrap(), "restart-me").unwrap();
    let again = Governor::new(maps, g.layout().clone()).unwrap();
    assert_eq!(
        again.agent_name(agent_id(b"restart-me")).as_deref(),
        Some("restart-me")
    );
}

#[test]
fn an_exec_cgroup_with_processes_left_stays_tagged_until_it_is_empty() {
    let (_dir, g, maps) = governor();
    let cg = g.create_exec_cgroup("bot").unwrap();
    let id = crate::cgroup::id_of(&cg).unwrap();
    // Stands in for a process that outlived the command: removal fails.
    let survivor = cg.join("survivor");
    std::fs::write(&survivor, b"").unwrap();
    g.finish_exec_cgroup(cg.to_str().unwrap()).unwrap();
    assert!(cg.exists());
    assert!(
        maps.tags.lock().unwrap().contains_key(&id),
        "untagged while a process remains"
    );
    assert_eq!(g.reap_exec_cgroups().unwrap(), 0);
    assert!(maps.tags.lock().unwrap().contains_key(&id));

    std::fs::remove_file(&survivor).unwrap();
    assert_eq!(g.reap_exec_cgroups().unwrap(), 1);
    assert!(!cg.exists());
    assert!(!maps.tags.lock().unwrap().contains_key(&id));
    assert_eq!(g.reap_exec_cgroups().unwrap(), 0);
}

#[test]
fn an_agent_with_no_cgroup_can_be_quarantined_and_it_is_remembered() {
    let (dir, mut g, maps) = governor();
    let record = dir.path().join("data/quarantine.json");
    assert_eq!(g.remember_quarantine_in(record.clone()).unwrap(), 0);
    assert_eq!(g.set_quarantine("ghost", true).unwrap(), Vec::<u64>::new());
    let status = g.status(false).unwrap();
    assert!(status[0].quarantined && status[0].cgroups.is_empty());

    // A cgroup tagged for it later starts quarantined.
    let later = g.create_exec_cgroup("ghost").unwrap();
    let id = crate::cgroup::id_of(&later).unwrap();
    assert!(maps.tags.lock().unwrap()[&id].quarantined());
    g.finish_exec_cgroup(later.to_str().unwrap()).unwrap();

    // A new daemon over the same maps and record remembers it.
    let layout = g.layout().clone();
    let mut again = Governor::new(maps.clone(), layout).unwrap();
    assert_eq!(again.remember_quarantine_in(record).unwrap(), 1);
    assert!(again.agent_quarantine("ghost").is_some());
    again.set_quarantine("ghost", false).unwrap();
    assert!(again.agent_quarantine("ghost").is_none());
    assert!(matches!(
        again.set_quarantine("ghost", false),
        Err(StateError::UnknownAgent(_))
    ));
}

#[test]
fn an_agent_quarantined_in_freeze_mode_gets_no_new_exec() {
    let (_dir, g, _) = governor();
    g.set_quarantine_as("icy", true, QuarantineMode::Freeze, "test")
        .unwrap();
    assert!(matches!(
        g.create_exec_cgroup("icy"),
        Err(StateError::Frozen(_))
    ));
    g.set_quarantine("icy", false).unwrap();
    assert!(g.create_exec_cgroup("icy").is_ok());
}
