//! Plugin stdout and stderr: each line becomes a log line tagged with the plugin.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept; longer output is split.
const MAX_LINE: usize = 8 * 1024;

/// Which output stream of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The guest's stdout: logged at info level.
    Stdout,
    /// The guest's stderr: logged at warn level.
    Stderr,
}

/// A guest output stream that turns lines into `tracing` events with the plugin's name.
#[derive(Debug, Clone)]
pub struct LogOutput {
    /// The plugin writing.
    plugin: Arc<str>,
    /// Stdout or stderr.
    channel: Channel,
}

impl LogOutput {
    /// Output of `plugin` on `channel`.
    pub fn new(plugin: Arc<str>, channel: Channel) -> Self {
        LogOutput { plugin, channel }
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
        let text = text.trim_end_matches(['\r', '\n']);
        let plugin = &*self.output.plugin;
        match self.output.channel {
            Channel::Stdout => tracing::info!(plugin, stream = "stdout", "{text}"),
            Channel::Stderr => tracing::warn!(plugin, stream = "stderr", "{text}"),
        }
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
