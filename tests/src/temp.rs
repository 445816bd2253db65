//! Temporary folders for tests that write files, named per process so parallel runs of the suite
//! do not meet.

use std::path::{Path, PathBuf};

/// `kiln-{name}-{pid}` in the temp folder, made if missing (tests passing one name share it).
pub fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// As `dir`, emptied first so that nothing from an earlier test of the same name is left.
pub fn empty_dir(name: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id())),
    );
    dir(name)
}

/// Copies the folder tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
