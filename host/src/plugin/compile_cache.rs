//! The compile cache: compiled components on disk, bounded in size (least recently used
//! entries go first); `evhost cache` shows and prunes it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Largest size of the cache's compiled components; past it the least recently used go.
pub const MAX_CACHE_BYTES: u64 = 512 * 1024 * 1024;

/// Compiled components on disk, so that a restart or a revert to a known version does not
/// recompile (a Python or JavaScript component takes seconds to compile, milliseconds to load).
///
/// Files are named by the SHA-256 of the component bytes and the engine's compatibility hash
/// (wasmtime version and configuration). The directory must be writable only by the host's
/// user: its files are loaded as trusted native code.
#[derive(Debug, Clone)]
pub struct CompileCache {
    /// The cache directory.
    dir: PathBuf,
    /// Hex hash of the engine configuration, part of every file name.
    engine_hash: String,
}

impl CompileCache {
    pub(super) fn new(dir: PathBuf, engine: &Engine) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Whether the cache holds the compiled component `sha256` for this engine.
    pub fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `path` is an entry this build can load (made by the same wasmtime version and
    /// configuration).
    fn is_current(&self, path: &Path) -> bool {
        path.file_stem()
            .and_then(|stem| stem.to_str())
            .is_some_and(|stem| stem.ends_with(&format!("-{}", self.engine_hash)))
    }

    /// What the cache holds now (an absent directory holds nothing).
    ///
    /// # Errors
    ///
    /// When the directory cannot be read.
    pub fn usage(&self) -> std::io::Result<CacheUsage> {
        let mut usage = CacheUsage::default();
        for (_, size, path) in entries(&self.dir)? {
            usage.entries += 1;
            usage.bytes += size;
            if !self.is_current(&path) {
                usage.stale_entries += 1;
                usage.stale_bytes += size;
            }
        }
        Ok(usage)
    }

    /// Removes the entries this build cannot load (other wasmtime versions or
    /// configurations), then the least recently used until the rest fit in `max_bytes`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read or an entry cannot be removed.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<Pruned> {
        let mut pruned = Pruned::default();
        for (_, size, path) in entries(&self.dir)? {
            if !self.is_current(&path) {
                std::fs::remove_file(&path)?;
                pruned.removed += 1;
                pruned.freed_bytes += size;
            }
        }
        let lru = prune(&self.dir, max_bytes, None)?;
        pruned.removed += lru.removed;
        pruned.freed_bytes += lru.freed_bytes;
        Ok(pruned)
    }

    /// Loads the cached compilation of `bytes`, or compiles and caches it. Cache failures are
    /// logged and never fail the load.
    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path(sha256);
        if path.is_file() {
            match Self::deserialize(engine, &path) {
                Ok(component) => {
                    tracing::debug!(path = %path.display(), "loaded compiled component from cache");
                    // Recently used entries are the last to be pruned.
                    touch(&path);
                    return Ok(component);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %format!("{err:#}"), "ignoring unusable compile cache entry");
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = self.store(&component, &path) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot write the compile cache");
        }
        match prune(&self.dir, MAX_CACHE_BYTES, Some(&path)) {
            Ok(Pruned { removed: 0, .. }) => {}
            Ok(Pruned { removed, .. }) => {
                tracing::info!(dir = %self.dir.display(), removed, "compile cache over {} MiB: removed the least recently used entries", MAX_CACHE_BYTES >> 20);
            }
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot prune the compile cache");
            }
        }
        Ok(component)
    }

    #[allow(unsafe_code)]
    fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: the file was produced by `Component::serialize` of an engine with the same
        // compatibility hash (part of its name) and written atomically into a directory that
        // only the host writes; wasmtime checks its header and version before mapping it.
        unsafe { Component::deserialize_file(engine, path) }
    }

    fn store(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let serialized = component
            .serialize()
            .map_err(|err| std::io::Error::other(format!("{err:#}")))?;
        std::fs::create_dir_all(&self.dir)?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, serialized)?;
        std::fs::rename(&temporary, path)
    }
}

/// Marks `path` as just used (its modification time), for [`prune`].
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// What the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// Compiled components.
    pub entries: usize,
    /// Their size.
    pub bytes: u64,
    /// Of them, those made by another wasmtime version or configuration: this build never
    /// loads them.
    pub stale_entries: usize,
    /// Their size.
    pub stale_bytes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Entries removed.
    pub removed: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// The `*.cwasm` files of `dir` with their last use and size (none when `dir` is absent).
fn entries(dir: &Path) -> std::io::Result<Vec<(SystemTime, u64, PathBuf)>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("cwasm") {
            continue;
        }
        let meta = entry.metadata()?;
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push((used, meta.len(), path));
    }
    Ok(entries)
}

/// Removes the least recently used `*.cwasm` files of `dir` until the rest fit in
/// `max_bytes`, never `keep` (the entry just written).
fn prune(dir: &Path, max_bytes: u64, keep: Option<&Path>) -> std::io::Result<Pruned> {
    let mut entries = entries(dir)?;
    let mut total: u64 = entries.iter().map(|(_, size, _)| size).sum();
    let mut pruned = Pruned::default();
    if total <= max_bytes {
        return Ok(pruned);
    }
    entries.sort_by_key(|(used, _, _)| *used);
    for (_, size, path) in entries {
        if total <= max_bytes {
            break;
        }
        if Some(path.as_path()) == keep {
            continue;
        }
        std::fs::remove_file(&path)?;
        total = total.saturating_sub(size);
        pruned.removed += 1;
        pruned.freed_bytes += size;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::prune;

    #[test]
    fn the_least_recently_used_entries_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = std::time::SystemTime::now();
        let write = |name: &str, age_secs: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).expect("write");
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            file.set_modified(now - Duration::from_secs(age_secs))
                .expect("set mtime");
            path
        };
        let oldest = write("a.cwasm", 300);
        let older = write("b.cwasm", 200);
        let recent = write("c.cwasm", 100);
        // The entry just written, though its time is oldest, is never removed.
        let new = write("d.cwasm", 400);
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 1000]).expect("write");
        assert_eq!(
            prune(dir.path(), 1_000, Some(&new)).expect("prune").removed,
            0,
            "under the bound"
        );
        let pruned = prune(dir.path(), 250, Some(&new)).expect("prune");
        assert_eq!((pruned.removed, pruned.freed_bytes), (2, 200));
        assert!(!oldest.exists() && !older.exists());
        assert!(recent.exists() && new.exists());
        assert!(
            dir.path().join("other.txt").exists(),
            "only compiled components go"
        );
    }
}
