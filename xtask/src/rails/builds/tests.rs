use std::{collections::HashMap, ffi::OsStr};

use super::*;

#[test]
fn occurrences_are_counted() {
    assert_eq!(
        occurrences(b"..\0/v1/debug/pause\0/v1/debug\0", TEST_ROUTE),
        2
    );
    assert_eq!(occurrences(b"/v1/debu", TEST_ROUTE), 0);
    assert_eq!(occurrences(b"", TEST_ROUTE), 0);
}

#[test]
fn aya_is_found_in_cargo_tree_output() {
    let tree = "slowpoke-coordinator v0.1.0 (/w/slowpoke-coordinator)\n\
                slowpoke-agent v0.1.0 (/w/slowpoke-agent)\n\
                aya v0.14.0\n\
                aya-obj v0.2.1\n\
                aya v0.14.0 (*)\n\
                ayaya v1.0.0\n\
                serde v1.0.228\n";
    assert_eq!(
        aya_packages(tree),
        ["aya v0.14.0", "aya-obj v0.2.1", "slowpoke-agent v0.1.0"]
    );
    assert!(aya_packages("slowpoke-api v0.1.0 (/w/slowpoke-api)\nserde v1.0.228\n").is_empty());
}

#[test]
fn the_linker_is_hidden_from_path_and_from_rustups_cargo_home() {
    let scratch = scratch_dir("hide");
    let mut cmd = Command::new("true");
    hide_bpf_linker(&mut cmd, &scratch).expect("mirrors are made");
    let env: HashMap<_, _> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let home = PathBuf::from(&env[OsStr::new("CARGO_HOME")]);
    assert!(!home.join("bin").join(BPF_LINKER).exists());
    for dir in std::env::split_paths(&env[OsStr::new("PATH")]) {
        assert!(
            !dir.join(BPF_LINKER).exists(),
            "{} holds bpf-linker",
            dir.display()
        );
    }
    let real = crate::setup::cargo_home();
    for tool in ["bin/cargo", "bin/rustup", "registry"] {
        assert_eq!(
            home.join(tool).exists(),
            real.join(tool).exists(),
            "{tool} stays"
        );
    }
    std::fs::remove_dir_all(&scratch).expect("scratch removed");
}

// The client rail against throwaway workspaces (no registry dependencies, so they build offline
// in seconds): an "agent" whose build script needs bpf-linker the way aya-build does (on PATH,
// also as seen through `rustup run`), a "coordinator" using it, and maybe an "api".

const AGENT_BUILD_RS: &str = r#"
fn main() {
    // Like aya-build: through `rustup run nightly` when there is a rustup (which puts
    // $CARGO_HOME/bin first on PATH), else whatever is on PATH.
    let found = match std::process::Command::new("rustup")
        .args(["run", "nightly", "sh", "-c", "command -v bpf-linker"])
        .output()
    {
        Ok(out) => out.status.success(),
        Err(_) => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("bpf-linker").exists()),
    };
    if !found {
        panic!("bpf-linker not found");
    }
}
"#;

fn manifest(name: &str, extra: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}")
}

/// A workspace under the temporary directory with these files (and an empty `src/lib.rs` for
/// each member).
fn fixture(name: &str, members: &[(&str, String)], files: &[(&str, &str)]) -> Workspace {
    let root = scratch_dir(name);
    let list: Vec<String> = members.iter().map(|(m, _)| format!("\"{m}\"")).collect();
    let mut all: Vec<(String, String)> = vec![(
        "Cargo.toml".into(),
        format!(
            "[workspace]\nresolver = \"2\"\nmembers = [{}]\n",
            list.join(", ")
        ),
    )];
    for (member, cargo_toml) in members {
        all.push((format!("{member}/Cargo.toml"), cargo_toml.clone()));
        all.push((format!("{member}/src/lib.rs"), String::new()));
    }
    all.extend(
        files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned())),
    );
    for (path, text) in all {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("fixture dir");
        std::fs::write(&path, text).expect("fixture file");
    }
    Workspace::load(&root).expect("the fixture is a workspace")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-rails-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn subjects(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.subject.as_str()).collect()
}

#[test]
fn the_client_rail_catches_a_client_whose_build_needs_the_linker() {
    // A dependency the tree check does not know by name (not aya's, not the agent) whose build
    // script needs bpf-linker: only the check with the linker hidden can catch it.
    let agent = manifest("linker-user", "build = \"build.rs\"\n");
    let coordinator = manifest(
        "slowpoke-coordinator",
        "[dependencies]\nlinker-user = { path = \"../agent\" }\n",
    );
    let ws = fixture(
        "needs-linker",
        &[("agent", agent), ("coordinator", coordinator)],
        &[("agent/build.rs", AGENT_BUILD_RS)],
    );
    let findings = client_needs_no_bpf_toolchain(&ws, &ws.root.join("target/rails-client"))
        .expect("the rail runs");
    assert_eq!(
        subjects(&findings),
        ["slowpoke-api", "slowpoke-coordinator --no-default-features"]
    );
    assert!(
        findings[1].message.contains("bpf-linker not found"),
        "{}",
        findings[1].message
    );
    // With the linker visible the same build passes: the rail's failure came from hiding it.
    if crate::setup::cargo_home()
        .join("bin")
        .join(BPF_LINKER)
        .exists()
    {
        let status = ws
            .cargo()
            .args(["check", "--quiet", "-p", "slowpoke-coordinator"])
            .status()
            .expect("cargo runs");
        assert!(status.success());
    }
    std::fs::remove_dir_all(&ws.root).expect("fixture removed");
}

#[test]
fn the_client_rail_passes_a_client_with_the_agent_optional_and_catches_aya_in_the_api() {
    let agent = manifest("slowpoke-agent", "build = \"build.rs\"\n");
    let coordinator = manifest(
        "slowpoke-coordinator",
        "[features]\ndefault = [\"in-process\"]\nin-process = [\"dep:slowpoke-agent\"]\n\
         [dependencies]\nslowpoke-agent = { path = \"../agent\", optional = true }\n\
         slowpoke-api = { path = \"../api\" }\n",
    );
    let members = |api: String| {
        [
            ("agent", agent.clone()),
            ("coordinator", coordinator.clone()),
            ("api", api),
        ]
    };
    let files = [("agent/build.rs", AGENT_BUILD_RS)];

    let ws = fixture("complies", &members(manifest("slowpoke-api", "")), &files);
    let findings = client_needs_no_bpf_toolchain(&ws, &ws.root.join("target/rails-client"))
        .expect("the rail runs");
    assert!(findings.is_empty(), "{findings:#?}");
    std::fs::remove_dir_all(&ws.root).expect("fixture removed");

    let api = manifest(
        "slowpoke-api",
        "[dependencies]\naya-stub = { path = \"../aya-stub\" }\n",
    );
    let mut with_aya = members(api).to_vec();
    with_aya.push(("aya-stub", manifest("aya-stub", "")));
    let ws = fixture("aya-in-api", &with_aya, &files);
    let findings = client_needs_no_bpf_toolchain(&ws, &ws.root.join("target/rails-client"))
        .expect("the rail runs");
    assert_eq!(
        subjects(&findings),
        ["slowpoke-api", "slowpoke-coordinator --no-default-features"]
    );
    assert!(
        findings[0].message.contains("aya-stub v0.1.0"),
        "{}",
        findings[0].message
    );
    std::fs::remove_dir_all(&ws.root).expect("fixture removed");
}
