#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hermes-harvest"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds a Hermes home from `fixtures/<name>/home` in a fresh temp dir.
pub fn fixture_home(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    hermes_harvest::fixture::materialize(
        &repo().join("fixtures").join(name).join("home"),
        dir.path(),
    )
    .expect("materialize fixture");
    dir
}

pub fn run(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .expect("run binary")
}

pub fn run_in(home: &Path, args: &[&str]) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    let h = home.to_str().unwrap();
    full.push("--hermes-home");
    full.push(h);
    run(&full)
}
