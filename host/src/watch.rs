//! Watches the plugin directory: debounced changes of `*.wasm` files and their `<name>.toml`
//! sidecars are sent, as the path of the affected `.wasm`, to the host's reload loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

/// How long a file must stay unchanged before it is (re)loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The directory cannot be watched.
pub type WatchError = notify::Error;

/// The watcher; watching stops when it is dropped.
pub struct PluginWatcher {
    /// Keeps the underlying OS watcher alive.
    _debouncer: Debouncer<RecommendedWatcher>,
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

/// Starts watching `dir` (not recursively). Each debounced change sends the affected plugin
/// file on `changes`.
///
/// # Errors
///
/// When the OS watcher cannot be created or the directory cannot be watched.
pub fn watch(
    dir: &Path,
    changes: mpsc::UnboundedSender<PathBuf>,
) -> Result<PluginWatcher, WatchError> {
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let mut seen: Vec<PathBuf> = Vec::new();
            for event in events {
                if let Some(file) = plugin_file_of(&event.path)
                    && !seen.contains(&file)
                {
                    seen.push(file.clone());
                    let _ = changes.send(file);
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "plugin directory watcher error"),
    })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    Ok(PluginWatcher {
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
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
}
