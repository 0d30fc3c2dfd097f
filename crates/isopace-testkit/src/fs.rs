//! Atomic file writes: how editors, `kubectl cp` and config management replace a file, so a
//! reader sees the old content or the new, never a partial write.

use std::{fs, path::Path};

/// Writes `contents` to `path` through a hidden temporary file in the same directory
/// (`.<name>.tmp`, which a deployer skips) and a rename over `path`.
///
/// The rename gives `path` a new inode, so a change is visible to metadata checks at once.
/// Panics, naming the file, when a step fails.
pub fn write_atomically(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
    let path = path.as_ref();
    let name = path
        .file_name()
        .unwrap_or_else(|| panic!("{} names no file", path.display()))
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_file_is_replaced_by_a_new_one_and_nothing_is_left_beside_it() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomically(&path, "{}");
        let before = fs::metadata(&path).unwrap().ino();
        write_atomically(&path, b"{\"n\": 1}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\": 1}");
        assert_ne!(fs::metadata(&path).unwrap().ino(), before);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }
}
