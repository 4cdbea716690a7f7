//! The relay: moves entries into the partition they belong to, each exactly once.
//!
//! It runs in every host of a partitioned keyspace, over two kinds of source:
//!
//! - **outboxes** (`evhost:{pN}:outbox`): publishes bound for another partition than the one
//!   of the event that caused them. They are committed with that event's acknowledgement, in
//!   its partition's slot (a commit never leaves its slot); each names its target stream in
//!   its first field ([`TARGET_FIELD`]).
//! - **ingress streams** (`events:<type>`): events of producers that know nothing of
//!   partitions (the seeds' `payload` and `data` formats, or CloudEvents fields). Each goes to
//!   the partition of its key: its `partitionkey`, else the field of its JSON data that
//!   `--ingress-key TYPE=FIELD` names for its type, else its id. The moved entry is the
//!   event's CloudEvents fields, with that key as `partitionkey`, so that the saga it starts
//!   stays in its partition.
//!
//! A move is [`Broker::append_once`] on the target (the entry and a mark named after the source
//! entry, together, in the target's slot), then the source entry's acknowledgement (outbox
//! entries are deleted too). A relay that stops between the two moves the entry again when it
//! restarts, or another host's relay claims it after [`RelayOptions::claim_idle`]; the mark
//! turns the repeat into a no-op. Marks live for [`RelayOptions::mark_ttl`] (24 h by default),
//! far longer than any entry stays pending.
//!
//! The relay reads without blocking, over the broker's shared connections; when a pass
//! moves nothing it waits a little longer each time (up to [`MAX_IDLE`]), and a commit that
//! wrote to an outbox wakes it at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{
    Broker, BrokerError, Commit, Delivered, EntryId, Fields, GroupReader, GroupStart, Op, ReadFrom,
    Settlement,
};
use crate::event::{Event, PARTITION_KEY};
use crate::keyspace::Keyspace;
use crate::plugin::HostServices;

mod ingress;
mod outbox;

pub use ingress::IngressKeys;
pub use outbox::{TARGET_FIELD, outbox_op};

/// The consumer group of the relay on every source.
pub const GROUP: &str = "evhost:relay";
/// The name outbox entries that cannot be moved are dead-lettered under
/// (`evhost:{pN}:dlq:evhost.relay`).
pub const DEAD_LETTERS: &str = "evhost.relay";
/// The shortest wait between passes that moved nothing.
const MIN_IDLE: Duration = Duration::from_millis(2);
/// The longest wait between passes that moved nothing.
pub const MAX_IDLE: Duration = Duration::from_millis(100);

/// Settings of a relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The consumer name of this host's relay in [`GROUP`].
    pub consumer: String,
    /// Keys of ingress events by type.
    pub ingress_keys: IngressKeys,
    /// How long the mark of a moved entry is kept.
    pub mark_ttl: Duration,
    /// How long an entry stays pending for another relay before this one takes it over.
    pub claim_idle: Duration,
    /// How often the lag is measured.
    pub discovery_interval: Duration,
    /// How often new ingress streams are looked for (a `SCAN` of the keyspace).
    pub ingress_scan_interval: Duration,
    /// Most entries read from one source at a time.
    pub batch_size: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            consumer: "evhost".into(),
            ingress_keys: IngressKeys::default(),
            mark_ttl: Duration::from_secs(24 * 60 * 60),
            claim_idle: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(1),
            ingress_scan_interval: crate::stream_registry::FULL_SCAN_INTERVAL,
            batch_size: 100,
        }
    }
}

/// What a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// The outbox of a partition.
    Outbox,
    /// An ingress stream.
    Ingress,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Outbox => "outbox",
            Kind::Ingress => "ingress",
        }
    }
}

/// One stream the relay moves entries from.
#[derive(Clone)]
struct Source {
    stream: String,
    kind: Kind,
    /// The partition of an outbox (its dead letters go there).
    keyspace: Keyspace,
    /// Whether the relay's group is known to exist.
    group_exists: bool,
    /// Whether this consumer's own pending entries (from before a restart) were read again.
    pending_read: bool,
}

/// The relay of one host.
pub struct Relay {
    services: Arc<HostServices>,
    options: RelayOptions,
    reader: Box<dyn GroupReader>,
    sources: Vec<Source>,
    /// When ingress streams were last looked for.
    last_discovery: Option<Instant>,
    /// When ingress streams were last looked for.
    last_ingress_scan: Option<Instant>,
    /// When other relays' idle entries were last looked for.
    last_claim: Instant,
    /// The partitions whose outboxes this relay moves (`None`: every one); ingress streams
    /// are moved by the holder of partition 0 alone, so that one relay keeps their order.
    owned: Option<watch::Receiver<BTreeSet<u32>>>,
}

impl Relay {
    /// A relay of the keyspace of `services`, with its reader connection; `None` for the
    /// single layout, which has nothing to move.
    ///
    /// # Errors
    ///
    /// When the reader connection cannot be opened.
    pub async fn open(
        services: Arc<HostServices>,
        options: RelayOptions,
        owned: Option<watch::Receiver<BTreeSet<u32>>>,
    ) -> Result<Option<Self>, BrokerError> {
        let layout = services.keyspace;
        if !layout.is_partitioned() {
            return Ok(None);
        }
        let reader = services.broker.reader().await?;
        let sources = layout
            .each_partition()
            .filter_map(|keyspace| {
                Some(Source {
                    stream: keyspace.outbox()?,
                    kind: Kind::Outbox,
                    keyspace,
                    group_exists: false,
                    pending_read: false,
                })
            })
            .collect();
        Ok(Some(Relay {
            services,
            options,
            reader,
            sources,
            last_discovery: None,
            last_ingress_scan: None,
            last_claim: Instant::now(),
            owned,
        }))
    }

    fn broker(&self) -> &dyn Broker {
        self.services.broker.as_ref()
    }

    /// Whether this host moves the entries of source `index` now.
    fn serves(&self, index: usize) -> bool {
        let Some(owned) = &self.owned else {
            return true;
        };
        let owned = owned.borrow();
        let source = &self.sources[index];
        match source.kind {
            Kind::Outbox => owned.contains(&source.keyspace.partition()),
            Kind::Ingress => owned.contains(&0),
        }
    }

    /// The fence of a commit settling entries of source `index`: the lease of the outbox's
    /// partition (ingress settlements are plain acknowledgements, in a slot of their own).
    fn fence(&self, index: usize) -> Option<Op> {
        let source = &self.sources[index];
        (self.owned.is_some() && source.kind == Kind::Outbox).then(|| Op::Fence {
            key: source.keyspace.lease(),
            owner: self.options.consumer.clone(),
        })
    }

    /// Moves entries until `cancel` is cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut idle = MIN_IDLE;
        while !cancel.is_cancelled() {
            let moved = match self.pass().await {
                Ok(moved) => moved,
                Err(err) => {
                    tracing::warn!(error = %err, "relay pass failed; retrying");
                    idle = MAX_IDLE;
                    0
                }
            };
            if moved > 0 {
                idle = MIN_IDLE;
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.services.outbox_written.notified() => idle = MIN_IDLE,
                () = tokio::time::sleep(idle) => idle = (idle * 2).min(MAX_IDLE),
            }
        }
    }

    /// One pass over every source; returns how many entries it settled.
    pub async fn pass(&mut self) -> Result<usize, BrokerError> {
        let due = self
            .last_discovery
            .is_none_or(|last| last.elapsed() >= self.options.discovery_interval);
        if due {
            self.discover().await?;
            self.last_discovery = Some(Instant::now());
        }
        let mut settled = 0;
        if self.last_claim.elapsed() >= self.options.claim_idle / 2 {
            self.last_claim = Instant::now();
            for index in 0..self.sources.len() {
                if self.serves(index) {
                    settled += self.take_over(index).await?;
                }
            }
        }
        for index in 0..self.sources.len() {
            if self.serves(index) {
                settled += self.drain(index).await?;
            }
        }
        Ok(settled)
    }

    /// Looks for ingress streams not known yet (now and then: it walks the keyspace), and
    /// measures the lag of every source.
    async fn discover(&mut self) -> Result<(), BrokerError> {
        let scan_due = self
            .last_ingress_scan
            .is_none_or(|last| last.elapsed() >= self.options.ingress_scan_interval);
        if scan_due {
            self.scan_ingress().await?;
            self.last_ingress_scan = Some(Instant::now());
        }
        let mut lag: HashMap<Kind, u64> = HashMap::from([(Kind::Outbox, 0), (Kind::Ingress, 0)]);
        for source in &self.sources {
            let groups = self.broker().groups(&source.stream).await?;
            let behind = groups
                .iter()
                .find(|group| group.name == GROUP)
                .map_or(0, |group| group.lag.unwrap_or(0) + group.pending);
            *lag.entry(source.kind).or_default() += behind;
        }
        for (kind, entries) in lag {
            self.services.metrics.set_relay_lag(kind.as_str(), entries);
        }
        Ok(())
    }

    /// Adds the plain ingress streams (`events:<type>`) not known yet to the sources.
    async fn scan_ingress(&mut self) -> Result<(), BrokerError> {
        let layout = self.services.keyspace;
        let ingress_prefix = layout.ingress_stream("");
        for stream in self.broker().streams(&ingress_prefix).await? {
            let known = self.sources.iter().any(|source| source.stream == stream);
            if !known && layout.ingress_type_of(&stream).is_some() {
                tracing::info!(stream = %stream, "relay: moving the events of this stream into their partitions");
                self.sources.push(Source {
                    stream,
                    kind: Kind::Ingress,
                    keyspace: layout,
                    group_exists: false,
                    pending_read: false,
                });
            }
        }
        Ok(())
    }

    /// Reads the next entries of source `index` and moves them.
    async fn drain(&mut self, index: usize) -> Result<usize, BrokerError> {
        if !self.sources[index].group_exists {
            let stream = self.sources[index].stream.clone();
            self.broker()
                .create_group(&stream, GROUP, GroupStart::Beginning)
                .await?;
            self.sources[index].group_exists = true;
        }
        let source = &self.sources[index];
        let from = if source.pending_read {
            ReadFrom::New { block: None }
        } else {
            ReadFrom::Pending {
                after: EntryId::ZERO,
            }
        };
        let read = self
            .reader
            .read(
                &source.stream,
                GROUP,
                &self.options.consumer,
                from,
                self.options.batch_size,
            )
            .await;
        let entries = match read {
            Ok(entries) => entries,
            Err(BrokerError::NoGroup { .. }) => {
                self.sources[index].group_exists = false;
                return Ok(0);
            }
            Err(err) => return Err(err),
        };
        if entries.is_empty() && !self.sources[index].pending_read {
            self.sources[index].pending_read = true;
        }
        self.settle(index, entries).await
    }

    /// Moves again the entries of source `index` left pending: this relay's own (a settlement
    /// that failed, e.g. fenced while the partition was handed over, and the partition came
    /// back), and another relay's once idle for `claim_idle` (its host died; at once for an
    /// outbox of a partition this host holds, whose previous owner's commits are fenced). The
    /// relay works one batch at a time, so none of its own pending entries is in flight here;
    /// the marks make every repeated move a no-op.
    async fn take_over(&mut self, index: usize) -> Result<usize, BrokerError> {
        let source = &self.sources[index];
        if !source.group_exists {
            return Ok(0);
        }
        let idle = match self.owned {
            Some(_) if source.kind == Kind::Outbox => Duration::ZERO,
            _ => self.options.claim_idle,
        };
        let stale: Vec<EntryId> = match self
            .broker()
            .pending(
                &source.stream,
                GROUP,
                Duration::ZERO,
                self.options.batch_size,
            )
            .await
        {
            Ok(pending) => pending
                .into_iter()
                .filter(|entry| entry.consumer == self.options.consumer || entry.idle >= idle)
                .map(|entry| entry.id)
                .collect(),
            Err(BrokerError::NoGroup { .. }) => return Ok(0),
            Err(err) => return Err(err),
        };
        if stale.is_empty() {
            return Ok(0);
        }
        let claimed = self
            .broker()
            .claim_entries(
                &source.stream,
                GROUP,
                &self.options.consumer,
                Duration::ZERO,
                &stale,
            )
            .await?;
        tracing::info!(stream = %source.stream, entries = claimed.len(), "relay: moving entries left pending again");
        self.settle(index, claimed).await
    }

    /// Moves `entries` of source `index` and settles them in one commit.
    async fn settle(
        &mut self,
        index: usize,
        entries: Vec<Delivered>,
    ) -> Result<usize, BrokerError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let source = self.sources[index].clone();
        let mut settlements = Vec::with_capacity(entries.len());
        let mut moved = 0;
        for delivered in &entries {
            let entry = &delivered.entry;
            let ops = match source.kind {
                Kind::Outbox => {
                    let mut ops = match self
                        .move_from_outbox(&source, entry.id, &entry.fields)
                        .await?
                    {
                        Moved::Appended => {
                            moved += 1;
                            Vec::new()
                        }
                        Moved::AlreadyThere => Vec::new(),
                        Moved::Unusable(reason) => {
                            vec![dead_letter(&source, entry.id, &entry.fields, &reason)]
                        }
                    };
                    ops.push(Op::Remove {
                        stream: source.stream.clone(),
                        id: entry.id,
                    });
                    ops
                }
                Kind::Ingress => {
                    if self
                        .move_from_ingress(&source, entry.id, &entry.fields)
                        .await?
                    {
                        moved += 1;
                    }
                    Vec::new()
                }
            };
            settlements.push(Settlement {
                stream: source.stream.clone(),
                group: GROUP.to_string(),
                consumer: self.options.consumer.clone(),
                id: entry.id,
                ops,
                expects: Vec::new(),
            });
        }
        let report = self
            .broker()
            .commit(&Commit {
                ops: self.fence(index).into_iter().collect(),
                settlements,
            })
            .await?;
        if !report.skipped.is_empty() {
            tracing::debug!(stream = %source.stream, skipped = report.skipped.len(), "relay: entries were taken over by another host's relay meanwhile");
        }
        if moved > 0 {
            self.services
                .metrics
                .record_relay_moved(source.kind.as_str(), moved);
        }
        Ok(entries.len())
    }

    /// Appends an outbox entry to the stream it names.
    async fn move_from_outbox(
        &mut self,
        source: &Source,
        id: EntryId,
        fields: &Fields,
    ) -> Result<Moved, BrokerError> {
        let layout = self.services.keyspace;
        let Some(((name, target), rest)) = fields.split_first() else {
            return Ok(Moved::Unusable("the outbox entry has no fields".into()));
        };
        let target = String::from_utf8_lossy(target);
        if name != TARGET_FIELD {
            return Ok(Moved::Unusable(format!(
                "the outbox entry's first field is {name:?}, not {TARGET_FIELD:?}"
            )));
        }
        let Some((to, _)) = layout.locate_event_stream(&target) else {
            return Ok(Moved::Unusable(format!(
                "the outbox entry is bound for {target:?}, which is no event stream of this keyspace's {} partitions",
                layout.partitions()
            )));
        };
        let mark = to.moved_mark(&source.stream, &id.to_string());
        self.services.streams.register([target.as_ref()]).await?;
        let appended = self
            .broker()
            .append_once(&target, &rest.to_vec(), &mark, self.options.mark_ttl)
            .await?;
        Ok(if appended {
            Moved::Appended
        } else {
            Moved::AlreadyThere
        })
    }

    /// Appends an ingress entry to its partition; returns whether it appended (false: it had
    /// been moved before).
    async fn move_from_ingress(
        &mut self,
        source: &Source,
        id: EntryId,
        fields: &Fields,
    ) -> Result<bool, BrokerError> {
        let layout = self.services.keyspace;
        let event_type = layout.ingress_type_of(&source.stream).unwrap_or_default();
        let (to, moved_fields) = match Event::from_entry(&source.stream, id, fields) {
            Ok(mut event) => {
                let key = self.options.ingress_keys.key_of(&event);
                if let Some(key) = &key {
                    event.set_extension(PARTITION_KEY, key.as_str());
                }
                let to = layout.for_key(key.as_deref().unwrap_or(&event.id));
                (to.event_stream(&event.event_type), event.to_fields())
            }
            // Moved as it is, by its entry id: every plugin's consumer dead-letters it
            // with the reason, as it would have without partitions.
            Err(_) => (
                layout.for_key(&id.to_string()).event_stream(event_type),
                fields.clone(),
            ),
        };
        let Some((to_keyspace, _)) = layout.locate_event_stream(&to) else {
            return Ok(false);
        };
        let mark = to_keyspace.moved_mark(&source.stream, &id.to_string());
        self.services.streams.register([to.as_str()]).await?;
        self.broker()
            .append_once(&to, &moved_fields, &mark, self.options.mark_ttl)
            .await
    }
}

/// What became of an outbox entry.
enum Moved {
    /// It was appended to its target.
    Appended,
    /// Its mark exists: it had been appended before.
    AlreadyThere,
    /// It cannot be moved (not written by evhost?): it is dead-lettered.
    Unusable(String),
}

/// The dead letter of an outbox entry that cannot be moved, in the outbox's partition.
fn dead_letter(source: &Source, id: EntryId, fields: &Fields, reason: &str) -> Op {
    tracing::error!(stream = %source.stream, entry_id = %id, reason, "relay: outbox entry cannot be moved; dead-lettered");
    let mut dead: Fields = fields.clone();
    dead.push(("evhost.error".into(), reason.as_bytes().to_vec()));
    dead.push(("evhost.origin".into(), source.stream.clone().into_bytes()));
    dead.push(("evhost.origin_id".into(), id.to_string().into_bytes()));
    Op::Add {
        stream: source.keyspace.dead_letters(DEAD_LETTERS),
        fields: dead,
    }
}
