use std::{collections::HashMap, path::Path};

use mesh_common::CLASS_WATCH_CHILDREN;

use super::*;
use crate::{policy::path_glob_matches as cgroup_glob_matches, state::tests::governor};

#[test]
fn selector_globs_match_within_and_across_segments() {
    let yes = [
        (
            "/system.slice/support-*.service",
            "system.slice/support-1.service",
        ),
        (
            "/system.slice/support-*.service",
            "/system.slice/support-.service",
        ),
        ("/a/**", "a"),
        ("/a/**", "a/b/c"),
        ("/a/**/z", "a/z"),
        ("/a/**/z", "a/b/c/z"),
        ("/**/sel-?", "x/y/sel-1"),
        ("/t/sel-*", "t/sel-abc"),
        ("/t/*", "t/x"),
    ];
    for (glob, path) in yes {
        assert!(
            cgroup_glob_matches(glob, path),
            "{glob} should match {path}"
        );
    }
    let no = [
        (
            "/system.slice/support-*.service",
            "system.slice/x/support-1.service",
        ),
        ("/t/*", "t/x/y"),
        ("/t/*", "t"),
        ("/t/sel-?", "t/sel-12"),
        ("/t/sel-?", "t/sel-"),
        ("/a/**/z", "a/b/zz"),
        ("/t/sel-*", "u/sel-a"),
        ("/t/sel-*", "t/sel"),
    ];
    for (glob, path) in no {
        assert!(
            !cgroup_glob_matches(glob, path),
            "{glob} should not match {path}"
        );
    }
}

fn cand(rel_path: &str, id: u64) -> SelectorCandidate {
    SelectorCandidate {
        rel_path: rel_path.to_owned(),
        id,
    }
}

fn names(pairs: &[(u64, &str)]) -> HashMap<u64, String> {
    pairs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect()
}

#[test]
fn the_plan_tags_matches_and_leaves_explicit_tags_and_their_subtrees_alone() {
    let selectors = vec![("bot".to_owned(), "/t/sel-*".to_owned())];
    let attach = cand("t", 1);
    let cgroups = [
        cand("t/sel-a", 2),
        cand("t/sel-a/child", 3),
        cand("t/sel-b", 4),
        cand("t/other", 5),
        cand("t/other/sel-c", 6),
        cand("t/sel-explicit", 7),
        cand("t/manual", 8),
    ];
    // sel-explicit is tagged by an operator (as another agent);
    // manual too, and nothing below it is ours to touch.
    let tagged = names(&[(7, "operator"), (8, "operator")]);
    let plan = plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &HashMap::new());
    assert_eq!(
        plan,
        vec![
            SelectorAction::Tag {
                id: 2,
                rel_path: "t/sel-a".into(),
                agent: "bot".into()
            },
            SelectorAction::Tag {
                id: 4,
                rel_path: "t/sel-b".into(),
                agent: "bot".into()
            },
        ]
    );
    // The attach cgroup tagged by hand covers everything.
    let tagged = names(&[(1, "operator")]);
    assert!(plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &HashMap::new()).is_empty());
}

#[test]
fn the_plan_undoes_only_what_selectors_made() {
    let attach = cand("t", 1);
    let cgroups = [cand("t/sel-a", 2), cand("t/sel-b", 3), cand("t/sel-c", 4)];
    // 2 and 3 were tagged by the selector; 4 by hand (same agent).
    let tagged = names(&[(2, "bot"), (3, "bot"), (4, "bot"), (9, "bot")]);
    let made = names(&[(2, "bot"), (3, "bot"), (9, "bot")]);
    // The selector now names another agent, and only matches sel-a/sel-c.
    let selectors = vec![
        ("bot2".to_owned(), "/t/sel-a".to_owned()),
        ("bot2".to_owned(), "/t/sel-c".to_owned()),
    ];
    let plan = plan_selector_tags(&selectors, &attach, &cgroups, &tagged, &made);
    assert_eq!(
        plan,
        vec![
            SelectorAction::Retag {
                id: 2,
                rel_path: "t/sel-a".into(),
                from: "bot".into(),
                to: "bot2".into()
            },
            SelectorAction::Untag {
                id: 3,
                rel_path: "t/sel-b".into(),
                agent: "bot".into()
            },
            // Cgroup 9 is gone: forgotten, not touched.
            SelectorAction::Forget { id: 9 },
        ]
    );
    // No selectors: every tag they made goes, the explicit one stays.
    let plan = plan_selector_tags(&[], &attach, &cgroups, &tagged, &made);
    assert_eq!(
        plan,
        vec![
            SelectorAction::Untag {
                id: 2,
                rel_path: "t/sel-a".into(),
                agent: "bot".into()
            },
            SelectorAction::Untag {
                id: 3,
                rel_path: "t/sel-b".into(),
                agent: "bot".into()
            },
            SelectorAction::Forget { id: 9 },
        ]
    );
    // A selector tag an operator replaced is the operator's now.
    let tagged = names(&[(2, "operator")]);
    let plan = plan_selector_tags(&[], &attach, &cgroups, &tagged, &names(&[(2, "bot")]));
    assert_eq!(plan, vec![SelectorAction::Forget { id: 2 }]);
}

#[test]
fn the_plan_does_not_tag_below_a_cgroup_it_governs_for_the_same_agent() {
    let attach = cand("t", 1);
    let cgroups = [cand("t/a", 2), cand("t/a/b", 3), cand("t/a/b/c", 4)];
    let selectors = vec![
        ("deep".to_owned(), "/t/a/b/c".to_owned()),
        ("outer".to_owned(), "/t/**".to_owned()),
    ];
    let plan = plan_selector_tags(
        &selectors,
        &attach,
        &cgroups,
        &HashMap::new(),
        &HashMap::new(),
    );
    assert_eq!(
        plan,
        vec![
            SelectorAction::Tag {
                id: 2,
                rel_path: "t/a".into(),
                agent: "outer".into()
            },
            SelectorAction::Tag {
                id: 4,
                rel_path: "t/a/b/c".into(),
                agent: "deep".into()
            },
        ]
    );
}

#[test]
fn selectors_tag_retag_and_untag_through_the_maps_and_explicit_tags_win() {
    let (dir, g, maps) = governor();
    let sel_a = dir.path().join("attach/sel-a");
    let sel_b = dir.path().join("attach/sel-b");
    let other = dir.path().join("attach/other");
    for d in [&sel_a, &sel_b, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    let id = |p: &Path| crate::cgroup::id_of(p).unwrap();
    let agent_of = |p: &Path| {
        maps.tags
            .lock()
            .unwrap()
            .get(&id(p))
            .map(|t| decode_name(&t.agent_name))
    };
    // sel-b is tagged by hand first.
    g.tag(sel_b.to_str().unwrap(), "operator").unwrap();
    let selectors = vec![("bot".to_owned(), "/attach/sel-*".to_owned())];
    let changes = g.apply_selectors(|| selectors.clone()).unwrap();
    assert_eq!(changes.tagged, 1);
    assert_eq!(agent_of(&sel_a).as_deref(), Some("bot"));
    assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));
    assert_eq!(agent_of(&other), None);
    assert!(g.is_selector_tag(id(&sel_a)));
    // A second pass changes nothing.
    assert!(g.apply_selectors(|| selectors.clone()).unwrap().is_empty());

    // A new matching cgroup is found by the next pass.
    let sel_c = dir.path().join("attach/sel-c");
    std::fs::create_dir_all(&sel_c).unwrap();
    assert_eq!(g.apply_selectors(|| selectors.clone()).unwrap().tagged, 1);
    assert_eq!(agent_of(&sel_c).as_deref(), Some("bot"));

    // The selector changes agent: its tags move, the explicit one stays.
    let renamed = vec![("bot2".to_owned(), "/attach/sel-*".to_owned())];
    assert_eq!(g.apply_selectors(|| renamed.clone()).unwrap().retagged, 2);
    assert_eq!(agent_of(&sel_a).as_deref(), Some("bot2"));
    assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));

    // An operator tags a selector-made cgroup: theirs from now on.
    g.tag(sel_c.to_str().unwrap(), "pinned").unwrap();
    assert_eq!(agent_of(&sel_c).as_deref(), Some("pinned"));
    assert!(!g.is_selector_tag(id(&sel_c)));

    // The selector goes away: only what it made is untagged.
    assert_eq!(g.apply_selectors(Vec::new).unwrap().untagged, 1);
    assert_eq!(agent_of(&sel_a), None);
    assert_eq!(agent_of(&sel_b).as_deref(), Some("operator"));
    assert_eq!(agent_of(&sel_c).as_deref(), Some("pinned"));
}

#[test]
fn a_restarted_governor_still_knows_which_tags_selectors_made() {
    let (dir, g, maps) = governor();
    let record = dir.path().join("data/selector-tags.json");
    let layout = g.layout().clone();
    let mut g = g;
    assert_eq!(g.remember_selector_tags_in(record.clone()).unwrap(), 0);
    let sel = dir.path().join("attach/sel-a");
    let hand = dir.path().join("attach/sel-b");
    std::fs::create_dir_all(&sel).unwrap();
    std::fs::create_dir_all(&hand).unwrap();
    g.tag(hand.to_str().unwrap(), "bot").unwrap();
    let selectors = vec![("bot".to_owned(), "/attach/sel-*".to_owned())];
    assert_eq!(g.apply_selectors(|| selectors.clone()).unwrap().tagged, 1);
    assert!(record.exists());

    // A new daemon over the same (pinned) maps.
    drop(g);
    let mut again = Governor::new(maps.clone(), layout).unwrap();
    assert_eq!(again.remember_selector_tags_in(record).unwrap(), 1);
    let id = |p: &Path| crate::cgroup::id_of(p).unwrap();
    assert!(again.is_selector_tag(id(&sel)));
    assert!(!again.is_selector_tag(id(&hand)));
    // The selector is gone after the restart: only its own tag goes.
    assert_eq!(again.apply_selectors(Vec::new).unwrap().untagged, 1);
    let tags = maps.tags.lock().unwrap();
    assert!(!tags.contains_key(&id(&sel)));
    assert!(tags.contains_key(&id(&hand)));
}

#[test]
fn only_paths_a_glob_could_still_reach_are_watched() {
    let g = "/t/sel-*";
    assert!(may_match_below(g, ""));
    assert!(may_match_below(g, "t"));
    assert!(
        !may_match_below(g, "t/sel-1"),
        "a match, but nothing below it"
    );
    assert!(!may_match_below(g, "u"));
    assert!(may_match_below("/t/*/svc", "t/a"));
    assert!(!may_match_below("/t/*/svc", "t/a/svc"));
    assert!(may_match_below("/t/**/z", "t/a/b"));
    assert!(may_match_below("/t/**", "t"));
    assert!(!may_match_below("/t/sel-?", "t/x/y"));
}

#[test]
fn children_of_watched_cgroups_are_classified() {
    let attach = cand("t", 1);
    let cgroups = [
        cand("t/sel-1", 2),
        cand("t/plain", 3),
        cand("t/plain/deep", 4),
        cand("t/agents", 5),
    ];
    let got = desired_classes(&["/t/sel-*"], &attach, &cgroups);
    let want: HashMap<u64, (u32, usize)> = [
        (1, (CLASS_WATCH_CHILDREN, 0)),
        (2, (0, 2)),
        (3, (0, 2)),
        (5, (0, 2)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "t/plain/deep is below an unwatched cgroup");
    assert!(desired_classes(&[], &attach, &cgroups).is_empty());
    let deep = desired_classes(&["/t/*/svc"], &attach, &cgroups);
    assert_eq!(deep.get(&3), Some(&(CLASS_WATCH_CHILDREN, 2)));
    assert_eq!(deep.get(&4), Some(&(0, 3)));
}
