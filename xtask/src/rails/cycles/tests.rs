use std::collections::HashMap;

use super::*;

/// Parses a crate held in memory: `(path under src/, text)`.
fn graph(files: &[(&str, &str)]) -> CrateGraph {
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (Path::new("src").join(p), (*t).to_owned()))
        .collect();
    CrateGraph::parse(Path::new("src/lib.rs"), &|p| {
        files
            .get(p)
            .cloned()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    })
    .expect("the layout parses")
}

fn m(path: &str) -> ModPath {
    path.split("::").map(str::to_owned).collect()
}

fn at(file: &str, line: usize, path: &str) -> Reference {
    Reference {
        file: Path::new("src").join(file),
        line,
        path: path.to_owned(),
    }
}

#[test]
fn an_acyclic_crate_has_no_cycle() {
    let g = graph(&[
        ("lib.rs", "mod a;\nmod b;\npub use a::A;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
        ("b.rs", "pub struct B;\nfn f() -> super::C { todo!() }\n"),
    ]);
    assert_eq!(g.files.len(), 3);
    // a → b, and b → the crate root (its ancestor: no edge between siblings).
    assert_eq!(g.edges.len(), 2, "{:?}", g.edges);
    assert_eq!(g.cycles(), vec![]);
}

#[test]
fn a_two_cycle_is_found_with_one_use_per_edge() {
    let g = graph(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::{self, B};\npub fn f() {}\n"),
        (
            "b/mod.rs",
            "pub struct B;\n\nfn g() {\n    super::a::f();\n}\n",
        ),
    ]);
    assert_eq!(
        g.cycles(),
        vec![Cycle {
            level: vec![],
            modules: vec![m("a"), m("b")],
            evidence: vec![at("a.rs", 1, "crate::b"), at("b/mod.rs", 4, "super::a::f")],
        }]
    );
}

#[test]
fn a_three_cycle_through_a_grandchild_is_lifted_to_the_siblings() {
    let g = graph(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::B;\n"),
        ("b.rs", "pub struct B(crate::c::d::D);\n"),
        ("c.rs", "pub mod d;\n"),
        // The child using its parent (`super::C`) is one room; using `a` closes the circle.
        (
            "c/d.rs",
            "use super::C;\nfn f() {\n    assert!(crate::a::ok());\n}\n",
        ),
    ]);
    assert_eq!(
        g.cycles(),
        vec![Cycle {
            level: vec![],
            modules: vec![m("a"), m("b"), m("c")],
            evidence: vec![
                at("a.rs", 1, "crate::b::B"),
                at("b.rs", 1, "crate::c::d::D"),
                at("c/d.rs", 3, "crate::a::ok"),
            ],
        }]
    );
}

#[test]
fn cycles_inside_a_module_are_reported_at_their_level() {
    let g = graph(&[
        ("lib.rs", "mod a;\n"),
        ("a.rs", "mod x;\nmod y;\n"),
        ("a/x.rs", "use super::y::Y;\npub struct X;\n"),
        (
            "a/y.rs",
            "pub struct Y(self::inner::Z);\nmod inner { pub struct Z(super::super::x::X); }\n",
        ),
    ]);
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].level, m("a"));
    assert_eq!(cycles[0].modules, vec![m("a::x"), m("a::y")]);
    assert_eq!(cycles[0].evidence[1], at("a/y.rs", 2, "super::super::x::X"));
}

#[test]
fn test_only_uses_are_ignored() {
    let g = graph(&[
        ("lib.rs", "mod a;\nmod b;\n#[cfg(test)]\nmod tests;\n"),
        ("a.rs", "use crate::b::B;\n"),
        (
            "b.rs",
            "pub struct B;\n\
             #[cfg(test)]\nmod tests { use crate::a::*; }\n\
             #[cfg(all(test, unix))]\nfn helper() { crate::a::f(); }\n\
             #[test]\nfn t() { crate::a::f(); }\n\
             impl B {\n    #[cfg(test)]\n    fn h() { crate::a::f(); }\n}\n",
        ),
        // Not even read: a test module's file is no part of the product's graph.
        ("tests.rs", "this is not Rust"),
    ]);
    assert_eq!(g.edges.len(), 1, "{:?}", g.edges);
    assert_eq!(g.cycles(), vec![]);
}

#[test]
fn a_cfg_that_test_builds_may_skip_still_counts() {
    let g = graph(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\n"),
        (
            "b.rs",
            "#[cfg(not(test))]\nuse crate::a::A;\n#[cfg(any(test, unix))]\nuse crate::a::C;\n",
        ),
    ]);
    assert_eq!(g.cycles().len(), 1);
}

#[test]
fn an_ancestors_items_and_inline_modules_stay_in_the_room() {
    let g = graph(&[
        ("lib.rs", "mod kernel;\npub struct Root;\n"),
        (
            "kernel.rs",
            "mod events;\npub struct PauseRequest;\nuse events::E;\n",
        ),
        (
            "kernel/events.rs",
            "use super::PauseRequest;\nuse crate::Root;\nmod inner { use super::super::PauseRequest; }\n",
        ),
    ]);
    assert!(
        g.edges
            .iter()
            .all(|(from, to, _)| from.starts_with(to) || to.starts_with(from)),
        "{:?}",
        g.edges
    );
    assert_eq!(g.cycles(), vec![]);
}

#[test]
fn a_missing_module_file_is_an_error_naming_it() {
    let files: HashMap<PathBuf, String> =
        HashMap::from([("src/lib.rs".into(), "mod gone;".into())]);
    let err = CrateGraph::parse(Path::new("src/lib.rs"), &|p| {
        files
            .get(p)
            .cloned()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    })
    .unwrap_err();
    assert!(err.to_string().contains("src/gone.rs"), "{err}");
}
