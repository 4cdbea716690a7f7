//! Consumer supervision: finds the streams each plugin subscribes to (in every partition of
//! the keyspace, from its registry of streams), runs one consumer task per plugin × stream × worker, and stops those of
//! removed plugins and dropped subscriptions (their pending entries stay in Redis).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch as signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{BrokerError, EntryId, GroupStart};
use crate::consumer::{Consumer, ConsumerOptions, PartitionScope};
use crate::keyspace::Keyspace;
use crate::plugin::HostServices;
use crate::registry::Registry;

use super::HostOptions;

/// A consumer task: plugin, stream and worker index (`limits.concurrency` workers per stream).
type ConsumerKey = (String, String, usize);

/// How much earlier than a plugin's first run its `$` groups of a partitioned keyspace start.
const START_MARGIN_MS: u64 = 1000;

/// A consumer the plugins want: where its group starts if it must be created, and the
/// partition of its stream.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    start: GroupStart,
    keyspace: Keyspace,
}

/// A running consumer task.
struct RunningConsumer {
    /// Stops it.
    cancel: CancellationToken,
    /// Finishes when it stopped.
    handle: JoinHandle<()>,
}

/// The consumer tasks of a host, kept in line with its plugins and the streams that exist.
pub(super) struct Supervisor {
    services: Arc<HostServices>,
    registry: Arc<Registry>,
    options: ConsumerOptions,
    /// How often streams are looked for when nothing else wakes the loop.
    discovery_interval: Duration,
    /// Stops every consumer.
    cancel: CancellationToken,
    /// Tracks consumer tasks for a graceful shutdown.
    tracker: TaskTracker,
    running: HashMap<ConsumerKey, RunningConsumer>,
    /// Consumers told to stop whose successor must wait for them (same pending entries).
    stopping: HashMap<ConsumerKey, JoinHandle<()>>,
    /// Streams seen by earlier passes (`None` before the first pass).
    seen_streams: Option<HashSet<String>>,
    /// Most streams per plugin (see [`HostOptions::max_streams_per_plugin`]).
    max_streams: usize,
    /// Streams each plugin's patterns match but that are left unserved, as of the last pass.
    unserved: HashMap<String, usize>,
    /// When each plugin first ran on the (partitioned) keyspace, as an entry id.
    started: HashMap<String, EntryId>,
    /// The partitions this host holds the leases of (`None`: the single layout, all of it).
    owned: Option<signal::Receiver<BTreeSet<u32>>>,
    /// How often a partitioned keyspace is walked for streams no one registered.
    full_scan_interval: Duration,
    /// When it last was.
    last_full_scan: Option<tokio::time::Instant>,
}

impl Supervisor {
    /// A supervisor of consumers of the plugins in `registry`, tracked by `tracker`, that all
    /// stop when `cancel` is cancelled.
    pub fn new(
        services: Arc<HostServices>,
        registry: Arc<Registry>,
        options: &HostOptions,
        cancel: CancellationToken,
        tracker: TaskTracker,
        owned: Option<signal::Receiver<BTreeSet<u32>>>,
    ) -> Self {
        Supervisor {
            services,
            registry,
            options: options.consumer.clone(),
            discovery_interval: options.discovery_interval,
            cancel,
            tracker,
            running: HashMap::new(),
            stopping: HashMap::new(),
            seen_streams: None,
            max_streams: options.max_streams_per_plugin.max(1),
            unserved: HashMap::new(),
            started: HashMap::new(),
            owned,
            full_scan_interval: options.full_scan_interval,
            last_full_scan: None,
        }
    }

    /// The discovery loop: a pass every `discovery_interval` and whenever `changed` is told
    /// (a plugin was added, swapped or removed); every pass that succeeds marks the host
    /// `ready` (the first one counts).
    pub async fn run(mut self, changed: Arc<Notify>, ready: signal::Sender<bool>) {
        let mut owned = self.owned.clone();
        loop {
            match self.pass().await {
                Ok(()) => {
                    ready.send_replace(true);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "stream discovery failed; retrying");
                }
            }
            let leases_changed = async {
                match owned.as_mut() {
                    Some(owned) => {
                        if owned.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = changed.notified() => {}
                () = leases_changed => {}
                () = tokio::time::sleep(self.discovery_interval) => {}
            }
        }
    }

    /// The consumers the plugins want now, with where a new group of each starts, and how many
    /// matching streams each plugin leaves unserved because of the bound.
    ///
    /// A plugin's exact subscriptions are always served; streams its patterns match fill the
    /// rest of its bound, those it already consumes first, then by name, so that the set is
    /// stable from pass to pass. In a partitioned keyspace a plugin consumes only the streams
    /// (of its types, and its redrive streams) that exist in each partition, so that idle
    /// partitions cost no consumer; a stream that appears later is read from its first entry.
    fn wanted(
        &self,
        streams: &HashSet<String>,
    ) -> (HashMap<ConsumerKey, Wanted>, HashMap<String, usize>) {
        let layout = self.services.keyspace;
        let partitioned = layout.is_partitioned();
        let first_pass = self.seen_streams.is_none();
        let previously_seen = self.seen_streams.as_ref();
        let mut wanted: HashMap<ConsumerKey, Wanted> = HashMap::new();
        let mut unserved = HashMap::new();
        let owned: Option<BTreeSet<u32>> = self.owned.as_ref().map(|owned| owned.borrow().clone());
        let serves = |keyspace: &Keyspace| {
            owned
                .as_ref()
                .is_none_or(|owned| owned.contains(&keyspace.partition()))
        };
        for (name, slot) in self.registry.slots() {
            let version = slot.load_full();
            let workers = version.settings.consumers_per_stream();
            let started = self.started.get(&name).copied();
            let start_of = |stream: &str| {
                if let (true, GroupStart::End, Some(started)) =
                    (partitioned, version.settings.start, started)
                {
                    // `$` of a partitioned keyspace: what came since the plugin first ran, so
                    // that a stream that appeared while no host ran loses nothing.
                    return GroupStart::After(started);
                }
                // A stream that appeared while the host runs is read from its first entry.
                let seen_before = previously_seen.is_some_and(|seen| seen.contains(stream));
                if first_pass || seen_before {
                    version.settings.start
                } else {
                    GroupStart::Beginning
                }
            };
            let mut want = |stream: &str, start: GroupStart, keyspace: Keyspace, replace: bool| {
                for worker in 0..workers {
                    let key = (name.clone(), stream.to_string(), worker);
                    let consumer = Wanted { start, keyspace };
                    if replace {
                        wanted.insert(key, consumer);
                    } else {
                        wanted.entry(key).or_insert(consumer);
                    }
                }
            };
            let mut served: HashSet<String> = HashSet::new();
            for keyspace in layout.each_partition().filter(|keyspace| serves(keyspace)) {
                // Dead letters re-driven to this plugin alone.
                let redrive = keyspace.redrive(&name);
                if !partitioned || streams.contains(&redrive) {
                    want(&redrive, GroupStart::Beginning, keyspace, true);
                }
                for subscription in &version.subscriptions {
                    if let Some(event_type) = subscription.exact_type() {
                        let stream = keyspace.event_stream(event_type);
                        if !partitioned {
                            want(&stream, version.settings.start, keyspace, true);
                        } else if streams.contains(&stream) {
                            want(&stream, start_of(&stream), keyspace, true);
                        } else {
                            continue;
                        }
                        served.insert(stream);
                    }
                }
            }
            let running = |stream: &str| {
                self.running
                    .contains_key(&(name.clone(), stream.to_string(), 0))
            };
            let mut matched: Vec<(&String, Keyspace)> = streams
                .iter()
                .filter(|stream| !served.contains(stream.as_str()))
                .filter_map(|stream| {
                    let (keyspace, event_type) = layout.locate_event_stream(stream)?;
                    (serves(&keyspace) && version.subscribes_to(event_type))
                        .then_some((stream, keyspace))
                })
                .collect();
            matched.sort_by(|(a, _), (b, _)| running(b).cmp(&running(a)).then_with(|| a.cmp(b)));
            let room = self.max_streams.saturating_sub(served.len());
            if matched.len() > room {
                unserved.insert(name.clone(), matched.len() - room);
            }
            for (stream, keyspace) in matched.into_iter().take(room) {
                want(stream, start_of(stream), keyspace, false);
            }
        }
        (wanted, unserved)
    }

    /// Records when each plugin first ran on a partitioned keyspace (the first host to run it
    /// does), and remembers it.
    async fn record_starts(&mut self) -> Result<(), BrokerError> {
        let layout = self.services.keyspace;
        if !layout.is_partitioned() {
            return Ok(());
        }
        for (name, _) in self.registry.slots() {
            if self.started.contains_key(&name) {
                continue;
            }
            let key = layout.plugin_started(&name);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                });
            let broker = self.services.broker.as_ref();
            broker
                .set_if_absent(&key, now.to_string().as_bytes())
                .await?;
            let recorded = broker
                .get(&key)
                .await?
                .and_then(|value| String::from_utf8_lossy(&value).trim().parse::<u64>().ok())
                .unwrap_or(now);
            // Entries from a second before it: an entry of the same millisecond is not lost,
            // nor one stamped by a Redis clock a little behind this host's.
            self.started.insert(
                name,
                EntryId::new(recorded.saturating_sub(START_MARGIN_MS), 0),
            );
        }
        Ok(())
    }

    /// Reports the plugins whose bound of streams was reached: a warning when it first is,
    /// and the `evhost_streams_unserved` gauge.
    fn report_unserved(&mut self, unserved: HashMap<String, usize>) {
        for (plugin, count) in &unserved {
            if !self.unserved.contains_key(plugin) {
                tracing::warn!(plugin = %plugin, unserved = count, bound = self.max_streams, "the plugin's subscriptions match more streams than this host serves per plugin (--max-streams-per-plugin); the others are left unconsumed, their events stay in Redis");
            }
        }
        let metrics = &self.services.metrics;
        for plugin in self.unserved.keys() {
            if !unserved.contains_key(plugin) {
                metrics.set_streams_unserved(plugin, 0);
            }
        }
        for (plugin, count) in &unserved {
            metrics.set_streams_unserved(plugin, *count);
        }
        self.unserved = unserved;
    }

    /// One pass: start consumers on every stream a plugin subscribes to, stop those of
    /// removed plugins and dropped subscriptions.
    async fn pass(&mut self) -> Result<(), BrokerError> {
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let streams = self.find_streams().await?;
        self.record_starts().await?;
        let (wanted, unserved) = self.wanted(&streams);
        self.report_unserved(unserved);
        let to_stop: Vec<ConsumerKey> = self
            .running
            .iter()
            .filter(|(key, consumer)| !wanted.contains_key(*key) || consumer.handle.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        for key in to_stop {
            if let Some(consumer) = self.running.remove(&key) {
                if wanted.contains_key(&key) {
                    tracing::warn!(plugin = %key.0, stream = %key.1, worker = key.2, "consumer ended; restarting it");
                } else {
                    tracing::info!(plugin = %key.0, stream = %key.1, worker = key.2, "stopping consumer (plugin removed, no longer subscribed, or fewer workers)");
                }
                consumer.cancel.cancel();
                self.stopping.insert(key, consumer.handle);
            }
        }
        self.stopping.retain(|_, handle| !handle.is_finished());
        for (key, consumer) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            if let Some(consumer) = self.spawn_consumer(&key, consumer).await {
                self.running.insert(key, consumer);
            }
        }
        self.seen_streams
            .get_or_insert_with(HashSet::new)
            .extend(streams);
        Ok(())
    }

    /// The streams that exist: in the single layout a `SCAN` of the keyspace; when partitioned,
    /// the registry of streams, with a `SCAN` only every `full_scan_interval` (whose finds it
    /// registers, for the other hosts).
    async fn find_streams(&mut self) -> Result<HashSet<String>, BrokerError> {
        let layout = self.services.keyspace;
        let broker = self.services.broker.as_ref();
        if !layout.is_partitioned() {
            return Ok(broker
                .streams(layout.streams_prefix())
                .await?
                .into_iter()
                .collect());
        }
        let mut streams: HashSet<String> = self
            .services
            .streams
            .registered()
            .await?
            .into_iter()
            .collect();
        let scan_due = self
            .last_full_scan
            .is_none_or(|last| last.elapsed() >= self.full_scan_interval);
        if scan_due {
            let scanned = broker.streams(layout.streams_prefix()).await?;
            self.services
                .streams
                .register(scanned.iter().map(String::as_str))
                .await?;
            streams.extend(scanned);
            self.last_full_scan = Some(tokio::time::Instant::now());
        }
        Ok(streams)
    }

    /// Creates the consumer's group, then starts its task (after its predecessor of the same
    /// key, if one is stopping, has finished: same consumer name, same pending entries).
    async fn spawn_consumer(
        &mut self,
        key: &ConsumerKey,
        wanted: Wanted,
    ) -> Option<RunningConsumer> {
        if self.cancel.is_cancelled() {
            return None;
        }
        let (plugin, stream, worker) = key;
        let slot = self.registry.get(plugin)?;
        let cancel = self.cancel.child_token();
        let mut options = self.options.clone();
        options.consumer = worker_consumer_name(&options.consumer, *worker);
        let scope = PartitionScope {
            keyspace: wanted.keyspace,
            lease_owner: self.owned.as_ref().map(|_| self.options.consumer.clone()),
        };
        let mut consumer = Consumer::new(
            slot,
            scope,
            stream.clone(),
            wanted.start,
            self.services.clone(),
            options,
            cancel.clone(),
        );
        // Created before the task starts, so that readiness means "groups exist".
        consumer.create_group().await;
        let previous = self.stopping.remove(key);
        let handle = self.tracker.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            consumer.run().await;
        });
        Some(RunningConsumer { cancel, handle })
    }
}

/// The consumer name of worker `worker`: the host's name for the first, `<name>#<n>` for the
/// n-th (counting from 1), so that a restarted host finds each worker's pending entries again.
fn worker_consumer_name(consumer: &str, worker: usize) -> String {
    if worker == 0 {
        consumer.to_string()
    } else {
        format!("{consumer}#{}", worker + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::worker_consumer_name;

    #[test]
    fn workers_after_the_first_are_numbered_from_two() {
        assert_eq!(worker_consumer_name("web-1", 0), "web-1");
        assert_eq!(worker_consumer_name("web-1", 1), "web-1#2");
    }
}
