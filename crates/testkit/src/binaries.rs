//! The workspace's binaries, for tests that run them as processes. Cargo builds a package's
//! binaries only for that package's own tests, so these are built here, once per test
//! process, into the target directory the test runs from (debug or release as it is).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Builds `packages` and returns the directory holding their binaries.
///
/// The build runs without the variables cargo sets for the running test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`): ring's build script watches `CARGO_MANIFEST_DIR`, so with them every such
/// build rebuilt ring and all that depends on it (36 s), and the next `cargo test` again.
pub fn built(packages: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut built = BUILT.lock().unwrap();
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !built.iter().any(|b| b == p))
        .collect();
    if !missing.is_empty() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--locked"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
                build.env_remove(key.as_ref());
            }
        }
        for package in &missing {
            build.args(["-p", package]);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of {missing:?} failed");
        built.extend(missing.iter().map(|p| p.to_string()));
    }
    profile_dir.to_path_buf()
}
