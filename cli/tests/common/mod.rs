//! What the CLI's test binaries share: the binary, the fixtures, temporary folders and output text.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The kiln binary, not steered by a KILN_DEVICE in the caller's environment.
pub fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_remove("KILN_DEVICE");
    cmd
}

/// `kiln --device cpu generate -m MODEL`, for the caller to add the rest.
pub fn generate_on_cpu(model: &Path) -> Command {
    let mut cmd = kiln();
    cmd.args(["--device", "cpu", "generate", "-m"]).arg(model);
    cmd
}

/// tests/fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The tiny SD 1.x pipeline of tests/fixtures.
pub fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

/// An empty `kiln-cli-{name}-{pid}` under the system temp folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names of the entries of `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts the run succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the run `what` failed naming `expect` and left nothing in `dir`.
#[track_caller]
pub fn assert_refused(out: &Output, what: &str, expect: &str, dir: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded");
    assert!(err.contains(expect), "{what}: expected {expect:?} in {err}");
    assert!(
        std::fs::read_dir(dir).unwrap().next().is_none(),
        "{what} left files"
    );
}

/// A run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A run's stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
