//! What a plugin logs — `wasi:logging` messages, stdout and stderr — becomes host log lines that
//! cannot pass for the host's own.
//!
//! Every message is split on newlines; control characters (and the Unicode controls that
//! reorder text) are escaped; each line is one `tracing` event of this module's target, tagged
//! with the plugin's name. The plugin chooses the level and, for `wasi:logging`, a context that
//! becomes an escaped field, never the target. Lines are rate-limited per plugin (all its
//! instances and outputs together): a flood is dropped, and the next line that passes is
//! preceded by a warning with the number of lines dropped (also counted in
//! `evhost_plugin_log_lines_dropped_total{plugin}`).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWrite;
use tracing::Level;
use tracing::level_filters::LevelFilter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::metrics::Metrics;

/// Longest line kept; longer output is split.
const MAX_LINE: usize = 8 * 1024;
/// Longest `wasi:logging` context kept.
const MAX_CONTEXT: usize = 128;
/// Lines a plugin may log at once after a quiet time.
pub const LOG_BURST: u32 = 200;
/// Lines a plugin may log per second in the long run.
pub const LOG_LINES_PER_SECOND: u32 = 50;

/// Which output stream of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The guest's stdout: logged at info level.
    Stdout,
    /// The guest's stderr: logged at warn level.
    Stderr,
}

/// Whether `c` must not reach the log as it is: control characters (newlines, carriage returns,
/// terminal escape sequences) and the bidirectional controls that reorder what a terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `line` with every character of [`needs_escape`] written as its Rust escape (`\r`, `\t`,
/// `\u{1b}`...).
pub fn escape_line(line: &str) -> Cow<'_, str> {
    if !line.chars().any(needs_escape) {
        return Cow::Borrowed(line);
    }
    let mut escaped = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// The log lines of a message: split on newlines (a final newline ends the last line rather
/// than starting an empty one, and a `\r` before a newline is dropped), lines longer than
/// [`MAX_LINE`] bytes cut in pieces, each escaped.
pub fn log_lines(message: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let message = message.strip_suffix('\n').unwrap_or(message);
    message.split('\n').flat_map(|line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        chunks(line, MAX_LINE).map(escape_line)
    })
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        if text.len() <= max {
            rest = None;
            return Some(text);
        }
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        rest = Some(&text[cut..]);
        Some(&text[..cut])
    })
}

/// The answer of [`LineRate::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Log the line; `dropped` lines were dropped since the last one logged.
    Log {
        /// Lines dropped just before this one.
        dropped: u64,
    },
    /// Drop the line.
    Drop,
}

/// A token bucket: `burst` lines at once, refilled at `per_second`.
#[derive(Debug)]
pub struct LineRate {
    /// Most tokens.
    burst: f64,
    /// Tokens added per second.
    per_second: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Lines dropped since the last one admitted.
    dropped: u64,
}

impl LineRate {
    /// A full bucket at `now`.
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        LineRate {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            updated: now,
            dropped: 0,
        }
    }

    /// Whether a line may be logged at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Log {
                dropped: std::mem::take(&mut self.dropped),
            }
        } else {
            self.dropped += 1;
            Admission::Drop
        }
    }
}

/// Where a line comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Stdout or stderr.
    Output(Channel),
    /// `wasi:logging`, with the plugin's context string.
    Logging {
        /// The plugin's context (escaped and shortened before it is logged).
        context: &'a str,
    },
}

/// The log of one plugin: its lines, tagged, escaped and rate-limited.
pub struct PluginLog {
    /// The plugin's name.
    plugin: Arc<str>,
    /// The plugin's rate limit, shared by its instances.
    rate: Mutex<LineRate>,
    /// `evhost_plugin_log_lines_dropped_total{plugin}`.
    dropped: Counter,
}

impl std::fmt::Debug for PluginLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLog")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// Logs one line at a level chosen at run time (the `tracing` macros want a constant).
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::TRACE => tracing::trace!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::ERROR => tracing::error!($($rest)+),
        }
    };
}

impl PluginLog {
    /// The log of `plugin`, rate-limited at [`LOG_BURST`] and [`LOG_LINES_PER_SECOND`].
    pub fn new(plugin: Arc<str>, dropped: Counter) -> Self {
        PluginLog {
            plugin,
            rate: Mutex::new(LineRate::new(
                LOG_BURST,
                LOG_LINES_PER_SECOND,
                Instant::now(),
            )),
            dropped,
        }
    }

    /// Logs `message` at `level` (`critical` marks `wasi:logging`'s critical level, logged as
    /// an error). Returns the number of lines logged.
    pub fn write(&self, level: Level, critical: bool, source: Source<'_>, message: &str) -> usize {
        // Lines nobody would see do not use up the plugin's rate.
        if level > LevelFilter::current() {
            return 0;
        }
        let plugin = &*self.plugin;
        let (stream, context) = match source {
            Source::Output(Channel::Stdout) => ("stdout", None),
            Source::Output(Channel::Stderr) => ("stderr", None),
            Source::Logging { context: "" } => ("log", None),
            Source::Logging { context } => (
                "log",
                Some(escape_line(
                    chunks(context, MAX_CONTEXT).next().unwrap_or_default(),
                )),
            ),
        };
        let context = context.as_deref();
        let critical = critical.then_some(true);
        let mut logged = 0;
        for line in log_lines(message) {
            let admission = self
                .rate
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .admit(Instant::now());
            match admission {
                Admission::Drop => {
                    self.dropped.inc();
                }
                Admission::Log { dropped } => {
                    if dropped > 0 {
                        tracing::warn!(
                            plugin,
                            dropped,
                            "plugin log lines dropped: more than {LOG_LINES_PER_SECOND} a second"
                        );
                    }
                    event_at!(level, plugin, stream, context, critical, "{line}");
                    logged += 1;
                }
            }
        }
        logged
    }
}

/// The log of every plugin, by name: a plugin's rate limit is shared by all its instances and
/// outlives hot swaps.
pub struct PluginLogs {
    /// Where dropped lines are counted.
    metrics: Arc<Metrics>,
    /// Logs by plugin name.
    logs: Mutex<HashMap<Arc<str>, Arc<PluginLog>>>,
}

impl std::fmt::Debug for PluginLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLogs").finish_non_exhaustive()
    }
}

impl PluginLogs {
    /// No plugin logs yet; dropped lines are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        PluginLogs {
            metrics,
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// The log of `plugin`.
    pub fn of(&self, plugin: &Arc<str>) -> Arc<PluginLog> {
        let mut logs = self
            .logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        logs.entry(plugin.clone())
            .or_insert_with(|| {
                Arc::new(PluginLog::new(
                    plugin.clone(),
                    self.metrics.log_lines_dropped(plugin),
                ))
            })
            .clone()
    }
}

/// The last lines an instance wrote to stderr during the running call: a panic or an
/// exception leaves its text there before the trap, and the trap's message carries it (into
/// the log, the dead letter and `evhost dlq show`), minus the hints that do not apply to a
/// sandboxed plugin.
#[derive(Debug, Default)]
pub struct CallStderr {
    lines: Mutex<VecDeque<String>>,
}

/// Lines of stderr a trap's message carries at most.
const TAIL_LINES: usize = 10;
/// Characters of stderr a trap's message carries at most.
const TAIL_CHARS: usize = 2000;

impl CallStderr {
    fn lines(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call starts: what earlier calls wrote is forgotten.
    pub fn clear(&self) {
        self.lines().clear();
    }

    fn push(&self, line: &str) {
        // Rust's panic hook suggests RUST_BACKTRACE, which no one can set for a plugin.
        if line.trim().is_empty() || line.contains("RUST_BACKTRACE") {
            return;
        }
        let mut lines = self.lines();
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(escape_line(line).into_owned());
    }

    /// The lines kept, joined, at most [`TAIL_CHARS`] characters (the last ones).
    pub fn summary(&self) -> Option<String> {
        let lines = self.lines();
        if lines.is_empty() {
            return None;
        }
        let joined = lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ");
        let skip = joined.chars().count().saturating_sub(TAIL_CHARS);
        Some(joined.chars().skip(skip).collect())
    }
}

/// A guest output stream that turns lines into log lines of the plugin.
#[derive(Debug, Clone)]
pub struct LogOutput {
    /// The plugin's log.
    log: Arc<PluginLog>,
    /// Stdout or stderr.
    channel: Channel,
    /// Where stderr lines of the running call are also kept.
    tail: Option<Arc<CallStderr>>,
}

impl LogOutput {
    /// Output on `channel` into `log`.
    pub fn new(log: Arc<PluginLog>, channel: Channel) -> Self {
        LogOutput {
            log,
            channel,
            tail: None,
        }
    }

    /// Also keeps the lines of the running call in `tail`.
    pub fn keeping_tail(mut self, tail: Arc<CallStderr>) -> Self {
        self.tail = Some(tail);
        self
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Buffers bytes until a newline, then logs the line.
struct LineWriter {
    output: LogOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        if let Some(tail) = &self.output.tail {
            tail.push(&text);
        }
        let level = match self.output.channel {
            Channel::Stdout => Level::INFO,
            Channel::Stderr => Level::WARN,
        };
        self.output
            .log
            .write(level, false, Source::Output(self.output.channel), &text);
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        for byte in buf {
            if *byte == b'\n' {
                self.emit();
            } else {
                self.line.push(*byte);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert_eq!(escape_line("plain text, café"), "plain text, café");
        assert!(matches!(escape_line("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_line("\u{1b}[31mred\u{1b}[0m\tand\rback"),
            "\\u{1b}[31mred\\u{1b}[0m\\tand\\rback"
        );
        assert_eq!(escape_line("a\u{202E}b\u{0}"), "a\\u{202e}b\\u{0}");
    }

    #[test]
    fn messages_are_split_on_newlines_into_escaped_lines() {
        let lines: Vec<_> =
            log_lines("ok\nERROR evhost::host: redis connection lost\r\n").collect();
        assert_eq!(lines, ["ok", "ERROR evhost::host: redis connection lost"]);
        let lines: Vec<_> = log_lines("a\n\nb\x07").collect();
        assert_eq!(lines, ["a", "", "b\\u{7}"]);
        assert_eq!(log_lines("").collect::<Vec<_>>(), [""]);
        let long = "é".repeat(MAX_LINE);
        let pieces: Vec<_> = log_lines(&long).collect();
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|piece| piece.len() <= MAX_LINE));
        assert_eq!(pieces.concat(), long);
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate_and_counts_what_it_drops() {
        let start = Instant::now();
        let mut rate = LineRate::new(3, 10, start);
        for _ in 0..3 {
            assert_eq!(rate.admit(start), Admission::Log { dropped: 0 });
        }
        for _ in 0..5 {
            assert_eq!(rate.admit(start), Admission::Drop);
        }
        // A tenth of a second refills one line, which reports the five dropped.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.admit(later), Admission::Log { dropped: 5 });
        assert_eq!(rate.admit(later), Admission::Drop);
        // A long quiet time refills the burst, no more.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(rate.admit(much_later), Admission::Log { dropped: 1 });
        for _ in 0..2 {
            assert_eq!(rate.admit(much_later), Admission::Log { dropped: 0 });
        }
        assert_eq!(rate.admit(much_later), Admission::Drop);
        // Time going backwards (another instance's earlier `now`) neither adds nor panics.
        assert_eq!(rate.admit(start), Admission::Drop);
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_drops_are_counted() {
        let metrics = Metrics::new();
        let log = PluginLog::new(Arc::from("flooder"), metrics.log_lines_dropped("flooder"));
        let flood = "line\n".repeat(LOG_BURST as usize + 100);
        let subscriber = tracing_subscriber::fmt().with_writer(io::sink).finish();
        let logged = tracing::subscriber::with_default(subscriber, || {
            log.write(Level::ERROR, false, Source::Logging { context: "" }, &flood)
        });
        assert!(
            (LOG_BURST as usize..LOG_BURST as usize + 10).contains(&logged),
            "{logged}"
        );
        let text = metrics.render();
        let dropped: u64 = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("evhost_plugin_log_lines_dropped_total{plugin=\"flooder\"} ")
            })
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no drop counter: {text}"));
        assert_eq!(logged as u64 + dropped, LOG_BURST as u64 + 100);
    }
}
