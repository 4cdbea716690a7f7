//! Where a consumer's entries come from: first its own pending entries (delivered before,
//! never acknowledged: the host stopped or crashed), then new ones, with the next batch read
//! ahead while a full one is handled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::context::StreamContext;
use crate::broker::{BrokerError, Delivered, EntryId, GroupReader, ReadFrom};

/// Where the consumer is reading.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Own pending entries after this id.
    Pending(EntryId),
    /// New entries.
    New,
}

/// What a read gave.
pub(super) enum Read {
    /// Entries to handle, in stream order.
    Batch(Vec<Delivered>),
    /// Nothing to handle this time (no new entries, or the pending ones are done).
    Nothing,
    /// The consumer group is gone: it must be created again.
    GroupLost,
    /// The consumer was cancelled.
    Stopped,
}

/// The consumer's reading position and the batch it read ahead; owns its reader connection.
pub(super) struct EntrySource {
    context: Arc<StreamContext>,
    reader: Box<dyn GroupReader>,
    mode: Mode,
    /// The next batch, read while the previous one was handled. Its entries are pending for
    /// this consumer but not handled: if the host stops first, they are delivered again.
    ahead: Option<Result<Vec<Delivered>, BrokerError>>,
    /// Wait after a failed read, doubling up to 500 ms.
    backoff: Duration,
}

impl EntrySource {
    /// Opens a reader positioned at the consumer's own pending entries.
    pub async fn open(context: Arc<StreamContext>) -> Result<Self, BrokerError> {
        let reader = context.broker().reader().await?;
        Ok(EntrySource {
            context,
            reader,
            mode: Mode::Pending(EntryId::ZERO),
            ahead: None,
            backoff: Duration::from_millis(50),
        })
    }

    /// Whether the own pending entries are done and new entries are read.
    pub fn reading_new(&self) -> bool {
        matches!(self.mode, Mode::New)
    }

    /// Starts over with the own pending entries (after the group was created again).
    pub fn restart(&mut self) {
        self.mode = Mode::Pending(EntryId::ZERO);
        self.ahead = None;
    }

    /// The entries read ahead and not handed out yet.
    pub fn held(&self) -> HashSet<EntryId> {
        match &self.ahead {
            Some(Ok(entries)) => entries.iter().map(|delivered| delivered.entry.id).collect(),
            _ => HashSet::new(),
        }
    }

    /// The next batch: the one read ahead, or a read that waits up to `block` for new entries.
    pub async fn next(&mut self, block: Duration) -> Read {
        let context = self.context.clone();
        let from = match self.mode {
            Mode::Pending(after) => ReadFrom::Pending { after },
            Mode::New => ReadFrom::New { block: Some(block) },
        };
        let result = match self.ahead.take() {
            Some(result) => result,
            None => {
                let read = self.reader.read(
                    &context.stream,
                    &context.group,
                    context.consumer(),
                    from,
                    context.options.batch_size,
                );
                tokio::select! {
                    () = context.cancel.cancelled() => return Read::Stopped,
                    result = read => result,
                }
            }
        };
        let entries = match result {
            Ok(entries) => {
                self.backoff = Duration::from_millis(50);
                entries
            }
            Err(BrokerError::NoGroup { .. }) => return Read::GroupLost,
            Err(err) => {
                tracing::warn!(plugin = %context.group, stream = %context.stream, error = %err, "read failed; retrying in {:?}", self.backoff);
                if !context.pause(self.backoff).await {
                    return Read::Stopped;
                }
                self.backoff = (self.backoff * 2).min(Duration::from_millis(500));
                return Read::Nothing;
            }
        };
        if let Mode::Pending(_) = self.mode {
            match entries.last() {
                Some(last) => self.mode = Mode::Pending(last.entry.id),
                None => {
                    self.mode = Mode::New;
                    return Read::Nothing;
                }
            }
        }
        if entries.is_empty() {
            Read::Nothing
        } else {
            Read::Batch(entries)
        }
    }

    /// Whether a backlog is behind `batch` (a full batch of new entries): the next batch is
    /// then best read while this one is handled, so that Redis and the plugin work at once.
    pub fn backlog_behind(&self, batch: &[Delivered]) -> bool {
        self.reading_new() && batch.len() >= self.context.options.batch_size
    }

    /// Reads the next batch without blocking (when the backlog is gone, the read after it
    /// blocks) and keeps it for [`EntrySource::next`].
    pub async fn read_ahead(&mut self) {
        let context = &self.context;
        let read = self.reader.read_backlog(
            &context.stream,
            &context.group,
            context.consumer(),
            context.options.batch_size,
        );
        self.ahead = tokio::select! {
            () = context.cancel.cancelled() => None,
            result = read => Some(result),
        };
    }
}
