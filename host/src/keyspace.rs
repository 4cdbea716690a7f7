//! The names of every Redis key evhost uses, and the hash tags that decide their slots.
//!
//! Nothing else in evhost formats a key: streams, key-value entries, journals, dead letters and
//! redrive streams are all named here, together with the inverse (the event type of a stream
//! name) and the prefixes that discovery scans for. The only metadata key records the partition
//! count.
//!
//! A [`Keyspace`] is one layout of those names, seen from one partition.
//! [`Keyspace::single()`] (one partition, P = 1, the default) keeps the names evhost always
//! used:
//!
//! | what                         | key                          |
//! |------------------------------|------------------------------|
//! | events of type `T`           | `events:T`                   |
//! | key `k` of plugin `p`        | `evhost:kv:{p}:k`            |
//! | journal of plugin `p`        | `evhost:journal:p`           |
//! | dead letters of plugin `p`   | `evhost:dlq:p`               |
//! | events re-driven to `p`      | `evhost:redrive:p`           |
//! | the partition count          | `evhost:partitions` (absent: 1) |
//!
//! Only the key-value entries carry a hash tag (`{p}`), so the keys one commit touches (the
//! event's stream, the plugin's key-value entries, journal and dead letters) lie in different
//! Redis Cluster slots: the single layout is for a single Redis node.
//!
//! [`Keyspace::partitioned`] (P > 1, issue #14) gives every key of partition `N` the hash tag
//! `{pN}`, so that everything one commit of a partition touches lies in one slot:
//!
//! | what (partition `N`)                 | key                                  |
//! |--------------------------------------|--------------------------------------|
//! | events of type `T`                   | `evhost:{pN}:events:T`               |
//! | key `k` of plugin `p`                | `evhost:{pN}:kv:p:k`                 |
//! | journal of plugin `p`                | `evhost:{pN}:journal:p`              |
//! | dead letters of plugin `p`           | `evhost:{pN}:dlq:p`                  |
//! | events re-driven to `p`              | `evhost:{pN}:redrive:p`              |
//! | publishes bound for other partitions | `evhost:{pN}:outbox`                 |
//! | the host consuming the partition     | `evhost:{pN}:lease`                  |
//! | marks of entries moved in            | `evhost:{pN}:moved:<from>:<entry id>` |
//!
//! Producers that know nothing of partitions keep writing `events:T` (the single layout's
//! names): in a partitioned keyspace those are *ingress* streams, whose entries the relay moves
//! into their partitions. Plugin names contain no `:`, so one plugin's prefix never covers
//! another's keys.

use std::num::NonZeroU32;

/// Prefix of every event stream in the single layout (and of the ingress streams).
const EVENT_STREAMS: &str = "events:";
/// Prefix of the key-value entries in the single layout.
const KV: &str = "evhost:kv:";
/// Prefix of the journal streams in the single layout.
const JOURNALS: &str = "evhost:journal:";
/// Prefix of the dead-letter streams in the single layout.
const DEAD_LETTERS: &str = "evhost:dlq:";
/// Prefix of the redrive streams in the single layout.
const REDRIVES: &str = "evhost:redrive:";
/// The key recording the partition count.
const PARTITIONS: &str = "evhost:partitions";
/// Prefix of every key of a partitioned layout, up to the partition number.
const PARTITION_KEYS: &str = "evhost:{p";

/// How keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// One partition (P = 1) with the names evhost always used; for a single Redis node,
    /// because the keys of one commit lie in several slots.
    #[default]
    Single,
    /// P > 1 partitions, each key of partition `N` tagged `{pN}`.
    Partitioned {
        /// The partition count (at least 2).
        partitions: NonZeroU32,
    },
}

/// One layout of evhost's keys, as seen from one partition. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keyspace {
    /// How keys are laid out.
    layout: Layout,
    /// The partition whose keys this value names (always 0 in the single layout).
    partition: u32,
}

impl Keyspace {
    /// Today's layout: one partition, the names evhost always used.
    pub const fn single() -> Self {
        Keyspace {
            layout: Layout::Single,
            partition: 0,
        }
    }

    /// The layout of `partitions` partitions, seen from partition 0: the single layout when
    /// `partitions` is 1.
    pub const fn partitioned(partitions: NonZeroU32) -> Self {
        if partitions.get() == 1 {
            return Keyspace::single();
        }
        Keyspace {
            layout: Layout::Partitioned { partitions },
            partition: 0,
        }
    }

    /// The same layout seen from `partition` (taken modulo the partition count).
    pub const fn at(self, partition: u32) -> Self {
        Keyspace {
            layout: self.layout,
            partition: partition % self.partition_count().get(),
        }
    }

    /// Every partition of the layout, in order.
    pub fn each_partition(self) -> impl Iterator<Item = Keyspace> {
        (0..self.partitions()).map(move |partition| self.at(partition))
    }

    /// How keys are laid out.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of partitions of the layout.
    pub const fn partitions(&self) -> u32 {
        self.partition_count().get()
    }

    /// Number of partitions of the layout, as the partition function takes it.
    pub const fn partition_count(&self) -> NonZeroU32 {
        match self.layout {
            Layout::Single => NonZeroU32::MIN,
            Layout::Partitioned { partitions } => partitions,
        }
    }

    /// Whether the layout has more than one partition.
    pub const fn is_partitioned(&self) -> bool {
        matches!(self.layout, Layout::Partitioned { .. })
    }

    /// The partition whose keys this value names.
    pub const fn partition(&self) -> u32 {
        self.partition
    }

    /// The same layout seen from the partition of events with partition key `key`.
    pub fn for_key(self, key: &str) -> Self {
        self.at(crate::partition::partition_of(key, self.partition_count()))
    }

    /// Whether every key of one partition shares one hash tag, so that a commit of one
    /// partition lies in one Redis Cluster slot. False for the single layout (single node only).
    pub const fn one_slot_per_partition(&self) -> bool {
        self.is_partitioned()
    }

    /// The key that records the keyspace's partition count: `evhost:partitions` (absent: 1).
    pub fn partitions_key(&self) -> &'static str {
        PARTITIONS
    }

    /// The lease of this partition (`evhost:{pN}:lease`): the host that consumes it now.
    /// Commits of the partition are fenced with it (see [`crate::lease`]).
    pub fn lease(&self) -> String {
        self.tagged("lease")
    }

    /// The roll call of the hosts alive (`evhost:hosts`, a sorted set of consumer names scored
    /// by when each one's time runs out), so that the hosts share the partitions fairly.
    pub fn hosts(&self) -> &'static str {
        "evhost:hosts"
    }

    /// The registry of a partitioned keyspace's streams (`evhost:streams`, a set of stream
    /// names): hosts look here for the streams to consume instead of walking the keyspace.
    /// evhost's publishes, moves and re-drives register the streams they write to; a producer
    /// that writes to a partition's stream itself adds the stream's name (or waits for the
    /// host's occasional full scan).
    pub fn stream_registry(&self) -> &'static str {
        "evhost:streams"
    }

    /// The key recording when `plugin` first ran on a partitioned keyspace
    /// (`evhost:started:<plugin>`, a Unix time in ms): its group on a stream that existed
    /// before the group starts there when its setting is `$`, so that a stream that appeared
    /// while no host ran loses nothing.
    pub fn plugin_started(&self, plugin: &str) -> String {
        format!("evhost:started:{plugin}")
    }

    /// The start of every key of this partition: `evhost:{pN}:` (empty in the single layout).
    fn tagged(&self, rest: &str) -> String {
        match self.layout {
            Layout::Single => rest.to_string(),
            Layout::Partitioned { .. } => format!("{PARTITION_KEYS}{}}}:{rest}", self.partition),
        }
    }

    /// The stream of events of type `event_type` in this partition: `events:<type>` in the
    /// single layout, `evhost:{pN}:events:<type>` when partitioned.
    pub fn event_stream(&self, event_type: &str) -> String {
        match self.layout {
            Layout::Single => format!("{EVENT_STREAMS}{event_type}"),
            Layout::Partitioned { .. } => self.tagged(&format!("events:{event_type}")),
        }
    }

    /// The event type of an event stream of this partition, `None` when `stream` is not one.
    pub fn event_type_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        match self.layout {
            Layout::Single => stream.strip_prefix(EVENT_STREAMS),
            Layout::Partitioned { .. } => stream.strip_prefix(self.event_stream_prefix().as_str()),
        }
        .filter(|event_type| !event_type.is_empty())
    }

    /// The partition and event type of an event stream of any partition of the layout.
    pub fn locate_event_stream<'a>(&self, stream: &'a str) -> Option<(Keyspace, &'a str)> {
        match self.layout {
            Layout::Single => self
                .event_type_of(stream)
                .map(|event_type| (*self, event_type)),
            Layout::Partitioned { partitions } => {
                let rest = stream.strip_prefix(PARTITION_KEYS)?;
                let (number, rest) = rest.split_once("}:")?;
                let partition: u32 = number.parse().ok()?;
                if partition >= partitions.get() || number != partition.to_string() {
                    return None;
                }
                let event_type = rest.strip_prefix("events:")?;
                (!event_type.is_empty()).then(|| (self.at(partition), event_type))
            }
        }
    }

    /// The prefix every event stream of this partition starts with.
    pub fn event_stream_prefix(&self) -> String {
        self.event_stream("")
    }

    /// The prefix to discover the streams of every partition by `SCAN`: event, redrive and
    /// the other streams of the layout (callers tell them apart with the inverse functions).
    pub fn streams_prefix(&self) -> &'static str {
        match self.layout {
            Layout::Single => EVENT_STREAMS,
            Layout::Partitioned { .. } => PARTITION_KEYS,
        }
    }

    /// The stream producers that know nothing of partitions write events of `event_type` to:
    /// `events:<type>`, which the relay moves into partitions when the layout has several.
    pub fn ingress_stream(&self, event_type: &str) -> String {
        format!("{EVENT_STREAMS}{event_type}")
    }

    /// The event type of an ingress stream, `None` when `stream` is not one.
    pub fn ingress_type_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        stream
            .strip_prefix(EVENT_STREAMS)
            .filter(|event_type| !event_type.is_empty())
    }

    /// The prefix of every key-value entry of `plugin`: `evhost:kv:{<plugin>}:` in the single
    /// layout, `evhost:{pN}:kv:<plugin>:` when partitioned.
    ///
    /// The braces are a Redis Cluster hash tag: all entries of one plugin (of one partition)
    /// share a slot.
    pub fn kv_prefix(&self, plugin: &str) -> String {
        match self.layout {
            Layout::Single => format!("{KV}{{{plugin}}}:"),
            Layout::Partitioned { .. } => self.tagged(&format!("kv:{plugin}:")),
        }
    }

    /// The key of entry `key` of `plugin`'s key-value store.
    pub fn kv_key(&self, plugin: &str, key: &str) -> String {
        format!("{}{key}", self.kv_prefix(plugin))
    }

    /// The journal stream of `plugin`: `evhost:journal:<plugin>`.
    pub fn journal(&self, plugin: &str) -> String {
        match self.layout {
            Layout::Single => format!("{JOURNALS}{plugin}"),
            Layout::Partitioned { .. } => self.tagged(&format!("journal:{plugin}")),
        }
    }

    /// The dead-letter stream of `plugin`: `evhost:dlq:<plugin>`.
    pub fn dead_letters(&self, plugin: &str) -> String {
        format!("{}{plugin}", self.dead_letters_prefix())
    }

    /// The prefix every dead-letter stream of this partition starts with.
    pub fn dead_letters_prefix(&self) -> String {
        match self.layout {
            Layout::Single => DEAD_LETTERS.to_string(),
            Layout::Partitioned { .. } => self.tagged("dlq:"),
        }
    }

    /// The stream of events re-driven to `plugin` alone: `evhost:redrive:<plugin>`.
    pub fn redrive(&self, plugin: &str) -> String {
        format!("{}{plugin}", self.redrive_prefix())
    }

    /// The plugin a redrive stream of this partition belongs to, `None` when `stream` is not
    /// one.
    pub fn redrive_plugin<'a>(&self, stream: &'a str) -> Option<&'a str> {
        stream
            .strip_prefix(self.redrive_prefix().as_str())
            .filter(|plugin| !plugin.is_empty())
    }

    /// The prefix every redrive stream of this partition starts with.
    pub fn redrive_prefix(&self) -> String {
        match self.layout {
            Layout::Single => REDRIVES.to_string(),
            Layout::Partitioned { .. } => self.tagged("redrive:"),
        }
    }

    /// The outbox of this partition: publishes bound for other partitions, committed with the
    /// entry that caused them and moved by the relay (`evhost:{pN}:outbox`). The single layout
    /// has none (`None`): every publish stays in its one partition.
    pub fn outbox(&self) -> Option<String> {
        self.is_partitioned().then(|| self.tagged("outbox"))
    }

    /// The mark that entry `id` of stream `from` was moved into this partition
    /// (`evhost:{pN}:moved:<from>:<id>`): it makes each move happen once, even when the relay
    /// repeats it after a crash.
    pub fn moved_mark(&self, from: &str, id: &str) -> String {
        self.tagged(&format!("moved:{from}:{id}"))
    }
}

/// The event type of an event stream of any layout and partition (`events:T` or
/// `evhost:{pN}:events:T`), `None` when `stream` is not one: for an entry that lacks its type,
/// wherever it was read.
pub fn event_type_in(stream: &str) -> Option<&str> {
    let rest = match stream.strip_prefix(PARTITION_KEYS) {
        Some(rest) => {
            let (number, rest) = rest.split_once("}:")?;
            if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            rest
        }
        None => stream,
    };
    rest.strip_prefix(EVENT_STREAMS)
        .filter(|event_type| !event_type.is_empty())
}

/// The hash tag of `key` by the Redis Cluster rule: the text between the first `{` and the
/// first `}` after it, when that text is not empty. Only the tag, not the whole key, then
/// decides the key's slot.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// The mark of commit `id` in the slot of `key` (`evhost:commit:{<tag>}:<id>`, where the tag is
/// `key`'s hash tag or, without one, `key` itself, which hashes alike): it lets a commit run
/// at most once when it is sent again. `None` for a key whose braces would make the tag differ.
pub fn commit_mark(key: &str, id: &str) -> Option<String> {
    let tag = match hash_tag(key) {
        Some(tag) => tag,
        None if !key.contains(['{', '}']) => key,
        None => return None,
    };
    Some(format!("evhost:commit:{{{tag}}}:{id}"))
}

/// Whether `keys` certainly lie in one Redis Cluster slot: all carry the same hash tag, or they
/// are all the same key. (Keys with different tags may still share a slot by chance; that is
/// not something to rely on, so they count as apart.)
pub fn one_slot<'a>(keys: impl IntoIterator<Item = &'a str>) -> bool {
    let mut keys = keys.into_iter();
    let Some(first) = keys.next() else {
        return true;
    };
    match hash_tag(first) {
        Some(tag) => keys.all(|key| hash_tag(key) == Some(tag)),
        None => keys.all(|key| key == first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: Keyspace = Keyspace::single();

    /// The single layout keeps the names evhost always used, byte for byte.
    #[test]
    fn single_layout_keeps_todays_names() {
        assert_eq!(SINGLE.event_stream("AuctionEnded"), "events:AuctionEnded");
        assert_eq!(SINGLE.event_stream_prefix(), "events:");
        assert_eq!(SINGLE.kv_prefix("payment"), "evhost:kv:{payment}:");
        assert_eq!(
            SINGLE.kv_key("payment", "total"),
            "evhost:kv:{payment}:total"
        );
        assert_eq!(SINGLE.journal("audit"), "evhost:journal:audit");
        assert_eq!(SINGLE.dead_letters("payment"), "evhost:dlq:payment");
        assert_eq!(SINGLE.dead_letters_prefix(), "evhost:dlq:");
        assert_eq!(SINGLE.redrive("payment"), "evhost:redrive:payment");
        assert_eq!(SINGLE.redrive_prefix(), "evhost:redrive:");
        assert_eq!(Keyspace::default(), SINGLE);
        assert_eq!((SINGLE.partitions(), SINGLE.partition()), (1, 0));
        assert!(!SINGLE.one_slot_per_partition());
        assert_eq!(SINGLE.outbox(), None);
        assert_eq!(Keyspace::partitioned(NonZeroU32::MIN), SINGLE);
        assert_eq!(SINGLE.ingress_stream("A"), SINGLE.event_stream("A"));
    }

    fn eight() -> Keyspace {
        Keyspace::partitioned(NonZeroU32::new(8).expect("8"))
    }

    /// Every key of a partition carries its tag, whatever the plugin, type or key; the keys of
    /// a typical commit (stream, key-value entries, journal, dead letters, outbox) share a slot.
    #[test]
    fn a_partition_keeps_its_keys_in_one_slot() {
        let third = eight().at(3);
        assert_eq!(
            third.event_stream("AuctionEnded"),
            "evhost:{p3}:events:AuctionEnded"
        );
        assert_eq!(
            third.kv_key("payment", "total"),
            "evhost:{p3}:kv:payment:total"
        );
        assert_eq!(third.journal("audit"), "evhost:{p3}:journal:audit");
        assert_eq!(third.dead_letters("payment"), "evhost:{p3}:dlq:payment");
        assert_eq!(third.redrive("payment"), "evhost:{p3}:redrive:payment");
        assert_eq!(third.outbox().as_deref(), Some("evhost:{p3}:outbox"));
        assert_eq!(
            third.moved_mark("events:A", "1-0"),
            "evhost:{p3}:moved:events:A:1-0"
        );
        assert_eq!(third.ingress_stream("A"), "events:A");
        assert_eq!(third.partitions_key(), "evhost:partitions");
        assert!(third.one_slot_per_partition() && third.is_partitioned());
        let keys = [
            third.event_stream("AuctionEnded"),
            third.kv_key("payment", "{other}"),
            third.journal("payment"),
            third.dead_letters("payment"),
            third.redrive("payment"),
            third.outbox().expect("outbox"),
            third.moved_mark("evhost:{p1}:outbox", "1-0"),
            third.lease(),
        ];
        assert!(one_slot(keys.iter().map(String::as_str)), "{keys:?}");
        assert!(keys.iter().all(|key| hash_tag(key) == Some("p3")));
        assert!(
            keys.iter()
                .all(|key| key.starts_with(third.streams_prefix()))
        );
    }

    /// Streams of any partition are located; streams of other kinds, partitions out of range
    /// and numbers written otherwise are not.
    #[test]
    fn event_streams_of_any_partition_are_located() {
        let layout = eight();
        assert_eq!(layout.each_partition().count(), 8);
        for keyspace in layout.each_partition() {
            let stream = keyspace.event_stream("a:b");
            assert_eq!(keyspace.event_type_of(&stream), Some("a:b"));
            assert_eq!(layout.locate_event_stream(&stream), Some((keyspace, "a:b")));
            assert_eq!(
                layout.at(keyspace.partition() + 1).event_type_of(&stream),
                None
            );
            assert_eq!(
                keyspace.redrive_plugin(&keyspace.redrive("pay")),
                Some("pay")
            );
            assert_eq!(layout.locate_event_stream(&keyspace.redrive("pay")), None);
        }
        for other in [
            "evhost:{p8}:events:A",
            "evhost:{p03}:events:A",
            "evhost:{p1}:events:",
            "events:A",
        ] {
            assert_eq!(layout.locate_event_stream(other), None, "{other}");
        }
        assert_eq!(layout.at(11).partition(), 3);
        assert_eq!(layout.ingress_type_of("events:A"), Some("A"));
        assert_eq!(layout.ingress_type_of("evhost:{p1}:events:A"), None);
        assert_eq!(SINGLE.locate_event_stream("events:A"), Some((SINGLE, "A")));
    }

    /// A commit's mark lies in the slot of the commit's keys.
    #[test]
    fn commit_marks_share_the_commits_slot() {
        let stream = eight().at(5).event_stream("A");
        let mark = commit_mark(&stream, "c1").expect("a mark");
        assert_eq!(mark, "evhost:commit:{p5}:c1");
        assert!(one_slot([stream.as_str(), mark.as_str()]));
        assert_eq!(
            commit_mark("events:A", "c1").as_deref(),
            Some("evhost:commit:{events:A}:c1")
        );
        assert_eq!(commit_mark("a}b", "c1"), None);
        assert_eq!(commit_mark("x{}y", "c1"), None);
    }

    #[test]
    fn the_type_of_a_stream_of_any_layout() {
        assert_eq!(event_type_in("events:A"), Some("A"));
        assert_eq!(event_type_in("evhost:{p12}:events:a:b"), Some("a:b"));
        assert_eq!(event_type_in("evhost:{p1}:dlq:x"), None);
        assert_eq!(event_type_in("evhost:{px}:events:A"), None);
        assert_eq!(event_type_in("evhost:{p1}:events:"), None);
        assert_eq!(event_type_in("evhost:journal:x"), None);
    }

    /// Events go to the partition of their key by the documented function.
    #[test]
    fn a_key_picks_its_partition() {
        let layout = eight();
        let expected = crate::partition::fnv1a32(b"auction-7") % 8;
        assert_eq!(layout.for_key("auction-7").partition(), expected);
        assert_eq!(SINGLE.for_key("auction-7"), SINGLE);
    }

    /// Names and their inverses round-trip; other keys are not taken for streams of a kind.
    #[test]
    fn inverse_functions_round_trip() {
        for event_type in ["AuctionEnded", "workflow.started", "a:b", "{x}"] {
            let stream = SINGLE.event_stream(event_type);
            assert_eq!(SINGLE.event_type_of(&stream), Some(event_type));
            assert!(stream.starts_with(&SINGLE.event_stream_prefix()));
        }
        for plugin in ["payment", "fraud-check", "a:b"] {
            let redrive = SINGLE.redrive(plugin);
            assert_eq!(SINGLE.redrive_plugin(&redrive), Some(plugin));
            assert!(redrive.starts_with(&SINGLE.redrive_prefix()));
            assert!(
                SINGLE
                    .dead_letters(plugin)
                    .starts_with(&SINGLE.dead_letters_prefix())
            );
            assert_eq!(SINGLE.event_type_of(&SINGLE.dead_letters(plugin)), None);
            assert_eq!(SINGLE.event_type_of(&SINGLE.journal(plugin)), None);
            assert_eq!(SINGLE.redrive_plugin(&SINGLE.event_stream(plugin)), None);
        }
        assert_eq!(SINGLE.event_type_of("events:"), None);
        assert_eq!(SINGLE.redrive_plugin("evhost:redrive:"), None);
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag("evhost:kv:{payment}:total"), Some("payment"));
        assert_eq!(hash_tag("{a}{b}"), Some("a"));
        assert_eq!(hash_tag("x{}y{z}"), None);
        assert_eq!(hash_tag("x}{y}"), Some("y"));
        assert_eq!(hash_tag("events:AuctionEnded"), None);
        assert_eq!(hash_tag("open{only"), None);
    }

    /// Where the single layout promises one tag (a plugin's key-value entries), every key has
    /// it, whatever the key; the keys of one plugin's commit do not share one slot.
    #[test]
    fn keys_of_one_plugin_share_the_tag_the_layout_promises() {
        for plugin in ["payment", "fraud-check", "x"] {
            let keys: Vec<String> = ["", "total", "a:b", "{other}", "}{", "bidder:42"]
                .iter()
                .map(|key| SINGLE.kv_key(plugin, key))
                .collect();
            assert!(
                keys.iter().all(|key| hash_tag(key) == Some(plugin)),
                "{keys:?}"
            );
            assert!(one_slot(keys.iter().map(String::as_str)));
        }
        let commit = [
            SINGLE.event_stream("AuctionEnded"),
            SINGLE.kv_key("payment", "total"),
            SINGLE.journal("payment"),
            SINGLE.dead_letters("payment"),
        ];
        assert!(!one_slot(commit.iter().map(String::as_str)));
    }

    #[test]
    fn one_slot_needs_one_tag_or_one_key() {
        assert!(one_slot([]));
        assert!(one_slot(["events:A", "events:A"]));
        assert!(!one_slot(["events:A", "events:B"]));
        assert!(one_slot(["{p1}:a", "x{p1}y"]));
        assert!(!one_slot(["{p1}:a", "{p2}:a"]));
        assert!(!one_slot(["{p1}:a", "p1"]));
    }
}
