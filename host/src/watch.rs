//! Watches the plugin directory: changes of `*.wasm` files and their `<name>.toml` sidecars are
//! debounced and sent, as the path of the affected `.wasm`, to the host's reload loop.
//!
//! Only changes of a file's content or name count (create, modify, close after writing, remove,
//! rename). notify's inotify backend also reports *access* (a file opened, or closed after
//! reading): the host's own read of a changed file would wake the watcher again, and every
//! reload would cause the next one, for ever.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a file must stay unchanged before it is (re)loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The directory cannot be watched.
pub type WatchError = notify::Error;

/// The watcher; watching stops when it is dropped (and with it the debouncing thread).
pub struct PluginWatcher {
    /// Keeps the underlying OS watcher alive.
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

/// The plugin file a changed path belongs to: `x.wasm` itself, or `x.wasm` for its sidecar
/// `x.toml`. Hidden files and other extensions (temporary files of editors and deploy tools)
/// are ignored.
pub fn plugin_file_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    match path.extension()?.to_str()? {
        "wasm" => Some(path.to_path_buf()),
        "toml" => Some(path.with_extension("wasm")),
        _ => None,
    }
}

/// Whether an event of this kind can change what a file holds: creation, writes (and the close
/// that ends them), metadata changes (a file made readable), renames and removal. Opening,
/// reading and closing a file read-only cannot, nor can an access-time update.
pub fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// Plugin files that changed, each released once it stayed quiet for the debounce time.
#[derive(Debug)]
struct Settling {
    /// How long a file must stay quiet.
    quiet: Duration,
    /// Changed files and when each last changed.
    pending: HashMap<PathBuf, Instant>,
}

impl Settling {
    fn new(quiet: Duration) -> Self {
        Settling {
            quiet,
            pending: HashMap::new(),
        }
    }

    /// `file` changed at `now`.
    fn changed(&mut self, file: PathBuf, now: Instant) {
        self.pending.insert(file, now);
    }

    /// When the next pending file settles.
    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().min().map(|last| *last + self.quiet)
    }

    /// Removes and returns the files quiet since `quiet` at `now`, in path order.
    fn take_settled(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut settled: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) >= self.quiet)
            .map(|(file, _)| file.clone())
            .collect();
        for file in &settled {
            self.pending.remove(file);
        }
        settled.sort();
        settled
    }
}

/// Debounces `raw` changes into `changes` until either side closes.
fn settle(raw: &std_mpsc::Receiver<PathBuf>, changes: &mpsc::UnboundedSender<PathBuf>) {
    let mut settling = Settling::new(DEBOUNCE);
    loop {
        let received = match settling.next_deadline() {
            None => raw
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
            Some(deadline) => raw.recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(file) => settling.changed(file, Instant::now()),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        for file in settling.take_settled(Instant::now()) {
            if changes.send(file).is_err() {
                return;
            }
        }
    }
}

/// Starts watching `dir` (not recursively). Each debounced change sends the affected plugin
/// file on `changes`.
///
/// # Errors
///
/// When the OS watcher cannot be created, the directory cannot be watched or the debouncing
/// thread cannot be started.
pub fn watch(
    dir: &Path,
    changes: mpsc::UnboundedSender<PathBuf>,
) -> Result<PluginWatcher, WatchError> {
    let (raw_sender, raw) = std_mpsc::channel();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) if changes_content(&event.kind) => {
                for file in event.paths.iter().filter_map(|path| plugin_file_of(path)) {
                    let _ = raw_sender.send(file);
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "plugin directory watcher error"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    // The thread ends when the watcher (and with it the sender in its handler) is dropped.
    std::thread::Builder::new()
        .name("evhost-watch".into())
        .spawn(move || settle(&raw, &changes))
        .map_err(notify::Error::io)?;
    Ok(PluginWatcher { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn maps_changes_to_plugin_files() {
        assert_eq!(
            plugin_file_of(Path::new("p/a.wasm")),
            Some(PathBuf::from("p/a.wasm"))
        );
        assert_eq!(
            plugin_file_of(Path::new("p/a.toml")),
            Some(PathBuf::from("p/a.wasm"))
        );
        assert_eq!(plugin_file_of(Path::new("p/.a.wasm.tmp")), None);
        assert_eq!(plugin_file_of(Path::new("p/a.wasm.part")), None);
        assert_eq!(plugin_file_of(Path::new("p/README.md")), None);
    }

    #[test]
    fn reading_a_file_is_not_a_change() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(changes_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn a_file_settles_once_quiet_for_the_debounce_time() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut settling = Settling::new(ms(100));
        assert_eq!(settling.next_deadline(), None);
        settling.changed("a.wasm".into(), start);
        settling.changed("b.wasm".into(), start + ms(50));
        settling.changed("a.wasm".into(), start + ms(80));
        assert_eq!(settling.next_deadline(), Some(start + ms(150)));
        assert!(settling.take_settled(start + ms(140)).is_empty());
        assert_eq!(
            settling.take_settled(start + ms(160)),
            [PathBuf::from("b.wasm")]
        );
        assert_eq!(
            settling.take_settled(start + ms(180)),
            [PathBuf::from("a.wasm")]
        );
        assert_eq!(settling.next_deadline(), None);
    }
}
