//! The host's log lines as an operator would read them, captured for assertions.
//!
//! The capture is the thread's default subscriber, so it sees what the host logs from tasks of a
//! `current_thread` runtime (every consumer and reload task), and nothing of other tests.

use std::io;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

/// Captured log output; capturing stops when it is dropped.
pub struct LogCapture {
    /// The formatted output.
    output: Arc<Mutex<Vec<u8>>>,
    /// Keeps the capture installed on this thread.
    _guard: DefaultGuard,
}

/// Appends formatted lines to the shared output.
#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    /// Captures what this thread logs at info level and above, formatted like the binary's
    /// plain-text log (without times and colours).
    pub fn start() -> Self {
        // tracing caches, per call site, whether anyone listens. With a single thread-local
        // subscriber alive, tracing-core computes that for a call site first reached on another
        // thread from that thread's subscriber alone (none: "never"), and this capture would miss
        // it. A global subscriber that listens to nothing makes it ask every live subscriber.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(
                tracing::subscriber::NoSubscriber::default(),
            );
        });
        let output = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(CaptureWriter(output.clone()))
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        LogCapture {
            output,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        let output = self
            .output
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&output)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    }
}
