//! Reloads of changed plugin files, one task per file: a file that compiles slowly or hangs in
//! `describe()` never delays another plugin's swap. Changes seen while a file loads are
//! coalesced into one more load of it once the current one ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::plugin_files::PluginFiles;

/// The files being reloaded.
pub(super) struct Reloads {
    files: Arc<PluginFiles>,
    /// Files with a reload under way, and whether they changed again meanwhile.
    in_flight: Arc<Mutex<HashMap<PathBuf, bool>>>,
}

impl Reloads {
    pub fn new(files: Arc<PluginFiles>) -> Self {
        Reloads {
            files,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Reloads `path` in a task of its own, or once more after the reload under way.
    pub fn changed(&self, path: PathBuf) {
        {
            let mut in_flight = lock(&self.in_flight);
            if let Some(again) = in_flight.get_mut(&path) {
                *again = true;
                return;
            }
            in_flight.insert(path.clone(), false);
        }
        let files = self.files.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            loop {
                // Failures are recorded and logged by `reload_file`.
                let _ = files.reload_file(&path).await;
                let mut in_flight = lock(&in_flight);
                if in_flight.get(&path) == Some(&true) {
                    in_flight.insert(path.clone(), false);
                    continue;
                }
                in_flight.remove(&path);
                return;
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
