//! Atomic files: a checkpoint (or any output) is either the old one or the new one, never half
//! written; and exclusive output directories, so two runs never interleave their files.

use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` through a temporary file in the same directory, fsync it, then rename
/// over the target (atomic on POSIX file systems).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover of a killed run with this pid is ours to replace; `create_new` then never
    // follows a link planted under the temporary name.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // `rename` replaces a link at `path` instead of writing through it.
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Holds a directory for one run: an exclusive lock on `DIR/.rsrefseg.lock`, released when
/// dropped (or when the process dies). A second run writing into the same directory gets a
/// clear error instead of interleaving its files with the first one's.
pub struct DirLock {
    _file: std::fs::File,
}

/// Create `dir` if needed and take it for this run (see [`DirLock`]).
pub fn lock_dir(dir: &Path) -> Result<DirLock, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(".rsrefseg.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another rsrefseg run; wait for it or choose another output directory",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("rsrefseg-atomic-{}", std::process::id()));
        let p = dir.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn replaces_a_link_instead_of_writing_through_it() {
        let dir = std::env::temp_dir().join(format!("rsrefseg-atomic-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("out.png")).unwrap();
        // A link planted under the temporary name is not followed either.
        std::os::unix::fs::symlink(&victim, dir.join(format!(".out.png.tmp-{}", std::process::id()))).unwrap();
        write_atomic(&dir.join("out.png"), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.join("out.png")).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(dir.join("out.png")).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_directory_is_refused_until_released() {
        let dir = std::env::temp_dir().join(format!("rsrefseg-lock-{}", std::process::id()));
        let held = lock_dir(&dir).unwrap();
        let err = lock_dir(&dir).err().expect("second lock refused");
        assert!(err.contains("in use by another rsrefseg run"), "{err}");
        drop(held);
        lock_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
