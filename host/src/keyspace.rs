//! The names of every Redis key evhost uses, and the hash tags that decide their slots.
//!
//! Nothing else in evhost formats a key: streams, key-value entries, journals, dead letters and
//! redrive streams are all named here, together with the inverse (the event type of a stream
//! name) and the prefixes that discovery scans for. The only metadata key records the partition count.
//!
//! A [`Keyspace`] is one layout of those names. [`Keyspace::single()`] is the only layout today
//! (one partition, P = 1) and keeps the names evhost always used:
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
//! Redis Cluster slots: the single layout is for a single Redis node. A partitioned layout
//! (issue #14) gives every key of partition N one hash tag, so that one commit per partition
//! stays in one slot; it is a second [`Layout`] and a keyspace value per partition, with the
//! same methods.

/// Prefix of every event stream in the single layout.
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

/// How keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// One partition (P = 1) with the names evhost always used; for a single Redis node,
    /// because the keys of one commit lie in several slots.
    #[default]
    Single,
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

    /// How keys are laid out.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of partitions of the layout.
    pub const fn partitions(&self) -> u32 {
        match self.layout {
            Layout::Single => 1,
        }
    }

    /// The partition whose keys this value names.
    pub const fn partition(&self) -> u32 {
        self.partition
    }

    /// Whether every key of one partition shares one hash tag, so that a commit of one
    /// partition lies in one Redis Cluster slot. False for the single layout (single node only).
    pub const fn one_slot_per_partition(&self) -> bool {
        match self.layout {
            Layout::Single => false,
        }
    }

    /// The key that records the keyspace's partition count: `evhost:partitions` (absent: 1).
    pub fn partitions_key(&self) -> &'static str {
        PARTITIONS
    }

    /// The stream of events of type `event_type`: `events:<type>`.
    pub fn event_stream(&self, event_type: &str) -> String {
        format!("{EVENT_STREAMS}{event_type}")
    }

    /// The event type of an event stream, `None` when `stream` is not one.
    pub fn event_type_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        stream
            .strip_prefix(EVENT_STREAMS)
            .filter(|event_type| !event_type.is_empty())
    }

    /// The prefix every event stream starts with, to discover them by `SCAN`.
    pub fn event_stream_prefix(&self) -> &'static str {
        EVENT_STREAMS
    }

    /// The prefix of every key-value entry of `plugin`: `evhost:kv:{<plugin>}:`.
    ///
    /// The braces are a Redis Cluster hash tag: all entries of one plugin share a slot.
    pub fn kv_prefix(&self, plugin: &str) -> String {
        format!("{KV}{{{plugin}}}:")
    }

    /// The key of entry `key` of `plugin`'s key-value store.
    pub fn kv_key(&self, plugin: &str, key: &str) -> String {
        format!("{}{key}", self.kv_prefix(plugin))
    }

    /// The journal stream of `plugin`: `evhost:journal:<plugin>`.
    pub fn journal(&self, plugin: &str) -> String {
        format!("{JOURNALS}{plugin}")
    }

    /// The dead-letter stream of `plugin`: `evhost:dlq:<plugin>`.
    pub fn dead_letters(&self, plugin: &str) -> String {
        format!("{DEAD_LETTERS}{plugin}")
    }

    /// The prefix every dead-letter stream starts with.
    pub fn dead_letters_prefix(&self) -> &'static str {
        DEAD_LETTERS
    }

    /// The stream of events re-driven to `plugin` alone: `evhost:redrive:<plugin>`.
    pub fn redrive(&self, plugin: &str) -> String {
        format!("{REDRIVES}{plugin}")
    }

    /// The plugin a redrive stream belongs to, `None` when `stream` is not one.
    pub fn redrive_plugin<'a>(&self, stream: &'a str) -> Option<&'a str> {
        stream
            .strip_prefix(REDRIVES)
            .filter(|plugin| !plugin.is_empty())
    }

    /// The prefix every redrive stream starts with, to discover them by `SCAN`.
    pub fn redrive_prefix(&self) -> &'static str {
        REDRIVES
    }
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
    }

    /// Names and their inverses round-trip; other keys are not taken for streams of a kind.
    #[test]
    fn inverse_functions_round_trip() {
        for event_type in ["AuctionEnded", "workflow.started", "a:b", "{x}"] {
            let stream = SINGLE.event_stream(event_type);
            assert_eq!(SINGLE.event_type_of(&stream), Some(event_type));
            assert!(stream.starts_with(SINGLE.event_stream_prefix()));
        }
        for plugin in ["payment", "fraud-check", "a:b"] {
            let redrive = SINGLE.redrive(plugin);
            assert_eq!(SINGLE.redrive_plugin(&redrive), Some(plugin));
            assert!(redrive.starts_with(SINGLE.redrive_prefix()));
            assert!(
                SINGLE
                    .dead_letters(plugin)
                    .starts_with(SINGLE.dead_letters_prefix())
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
