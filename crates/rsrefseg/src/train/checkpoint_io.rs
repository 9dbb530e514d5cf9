//! Atomic files: a checkpoint (or any output) is either the old one or the new one, never half
//! written; and exclusive output directories, so two runs never interleave their files.

pub use crate::checkpoint::first_non_finite;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A checkpoint as files: `{name}-{step}.bin` blobs and `state-{step}.json` recording their
/// sha256, plus `state.json` (a copy of the newest state, written last). The last `keep`
/// checkpoints stay on disk; [`load_verified`] falls back to an older one when the newest is
/// damaged (torn, zeroed, bit-flipped: anything that changes a digest).
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest<S> {
    step: usize,
    /// File name → sha256.
    digests: BTreeMap<String, String>,
    state: S,
}

/// Write one checkpoint: each blob, then its state file, then `state.json`; older checkpoints
/// beyond the newest `keep` are removed.
pub fn save_verified<S: Serialize>(dir: &Path, step: usize, blobs: &[(&str, &[u8])], state: &S, keep: usize) -> std::io::Result<()> {
    let mut digests = BTreeMap::new();
    for (name, bytes) in blobs {
        let file = format!("{name}-{step}.bin");
        write_atomic(&dir.join(&file), bytes)?;
        digests.insert(file, sha256_hex(bytes));
    }
    let manifest = serde_json::to_vec_pretty(&Manifest { step, digests, state }).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(format!("state-{step}.json")), &manifest)?;
    write_atomic(&dir.join("state.json"), &manifest)?;
    let steps = checkpoint_steps(dir);
    for &old in steps.iter().skip(keep.max(1)) {
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == format!("state-{old}.json") || (name.ends_with(&format!("-{old}.bin")) && !name.starts_with('.')) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Steps with a `state-{step}.json` in `dir`, newest first.
fn checkpoint_steps(dir: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("state-")?.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    steps
}

/// The newest checkpoint of `dir` whose files match their digests and which `accept` takes
/// (it decodes the blobs, by name without the step: `"model"` → bytes). Damaged checkpoints are
/// reported on stderr and skipped; the error lists why each candidate was refused.
pub fn load_verified<S: DeserializeOwned, T>(
    dir: &Path,
    mut accept: impl FnMut(&S, &BTreeMap<String, Vec<u8>>) -> Result<T, String>,
) -> Result<(S, T), String> {
    let mut candidates: Vec<PathBuf> = vec![dir.join("state.json")];
    candidates.extend(checkpoint_steps(dir).into_iter().map(|s| dir.join(format!("state-{s}.json"))));
    let mut refused = Vec::new();
    let mut tried = std::collections::HashSet::new();
    for path in candidates {
        let attempt = (|| {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            let m: Manifest<S> = serde_json::from_slice(&bytes).map_err(|e| format!("unreadable ({e})"))?;
            if !tried.insert(m.step) {
                return Err(String::new());
            }
            let mut blobs = BTreeMap::new();
            for (file, digest) in &m.digests {
                let data = std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
                if &sha256_hex(&data) != digest {
                    return Err(format!("{file} is damaged (its sha256 differs from the one recorded when it was written)"));
                }
                let key = file.strip_suffix(&format!("-{}.bin", m.step)).unwrap_or(file).to_string();
                blobs.insert(key, data);
            }
            let decoded = accept(&m.state, &blobs)?;
            Ok((m.state, decoded))
        })();
        match attempt {
            Ok(found) => {
                if !refused.is_empty() {
                    eprintln!("warning: resuming from an older checkpoint of {}: {}", dir.display(), refused.join("; "));
                }
                return Ok(found);
            }
            Err(e) if e.is_empty() => {}
            Err(e) => refused.push(format!("{}: {e}", path.file_name().unwrap_or_default().to_string_lossy())),
        }
    }
    Err(if refused.is_empty() {
        format!("no checkpoint in {}", dir.display())
    } else {
        format!("no usable checkpoint in {}: {}", dir.display(), refused.join("; "))
    })
}

/// Decode a burn record, turning a decoder panic (burn's recorder panics on some malformed
/// input; digests make that a file this program wrote, so it should never happen) into an error.
pub fn decode_record<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(format!("{what} could not be decoded")))
}

/// Holds a directory for one run: an exclusive lock on `DIR/.rsrefseg.lock`, released when
/// dropped (or when the process dies). A second run writing into the same directory gets a
/// clear error instead of interleaving its files with the first one's.
pub struct DirLock {
    _file: std::fs::File,
}

/// Remove `.NAME.tmp-PID` files [`write_atomic`] left behind in `dir` when a process was killed
/// mid-write. Call only while holding the directory ([`lock_dir`]).
pub fn remove_stale_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with('.')
            && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
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
        Ok(()) => {
            // Only this run writes here now: temporaries of an earlier run that was killed
            // mid-write are garbage.
            remove_stale_temporaries(dir);
            Ok(DirLock { _file: file })
        }
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
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".model-3.bin.tmp-12345"), b"torn").unwrap();
        std::fs::write(dir.join(".keep.tmp-notapid"), b"not ours").unwrap();
        let held = lock_dir(&dir).unwrap();
        assert!(!dir.join(".model-3.bin.tmp-12345").exists(), "a killed run's temporary is removed");
        assert!(dir.join(".keep.tmp-notapid").exists());
        let err = lock_dir(&dir).err().expect("second lock refused");
        assert!(err.contains("in use by another rsrefseg run"), "{err}");
        drop(held);
        lock_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rsrefseg-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn load(dir: &Path) -> Result<(u32, Vec<u8>), String> {
        load_verified::<u32, Vec<u8>>(dir, |_, blobs| Ok(blobs["model"].clone()))
    }

    #[test]
    fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
        let dir = scratch("fallback");
        for step in 1..=3u32 {
            save_verified(&dir, step as usize, &[("model", &[step as u8; 64])], &step, 2).unwrap();
        }
        // Only the last two are kept.
        assert!(!dir.join("model-1.bin").exists() && !dir.join("state-1.json").exists());
        assert_eq!(load(&dir).unwrap(), (3, vec![3; 64]));
        // Truncated, zeroed, one bit flipped: each is detected and step 2 is used.
        for damage in [&b"\x03\x03"[..], &[0u8; 64][..], &{
            let mut v = vec![3u8; 64];
            v[17] ^= 0x10;
            v
        }[..]] {
            std::fs::write(dir.join("model-3.bin"), damage).unwrap();
            assert_eq!(load(&dir).unwrap(), (2, vec![2; 64]));
        }
        // Both damaged: a clear error naming the files, no panic.
        std::fs::write(dir.join("model-2.bin"), b"").unwrap();
        let e = load(&dir).unwrap_err();
        assert!(e.contains("model-3.bin is damaged") && e.contains("model-2.bin is damaged"), "{e}");
        // A decoder that refuses (wrong settings) is a refusal too.
        save_verified(&dir, 4, &[("model", &[4u8; 8])], &4u32, 2).unwrap();
        let e = load_verified::<u32, ()>(&dir, |_, _| Err("other settings".into())).unwrap_err();
        assert!(e.contains("other settings"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_finite_parameters_are_named() {
        use burn::module::Param;
        use burn::tensor::{backend::Backend, Tensor};
        type B = burn::backend::NdArray<f32>;
        #[derive(burn::module::Module, Debug)]
        struct Two<B: Backend> {
            a: Param<Tensor<B, 1>>,
            b: Param<Tensor<B, 2>>,
        }
        let d = Default::default();
        let ok = Two::<B> { a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &d)), b: Param::from_tensor(Tensor::zeros([2, 2], &d)) };
        assert_eq!(first_non_finite(&ok), None);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let m = Two::<B> { a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &d)), b: Param::from_tensor(Tensor::from_floats([[0.0, bad], [1.0, 1.0]], &d)) };
            assert_eq!(first_non_finite(&m).as_deref(), Some("b"));
        }
    }
}
