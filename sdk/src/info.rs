//! [`PluginInfo`]: the name, version and subscriptions a plugin announces.

use crate::bindings::evhost::plugin::types;

/// What a plugin tells the host about itself, built with chained calls.
///
/// ```
/// use evhost_sdk::PluginInfo;
///
/// let info = PluginInfo::new("payment", "1.2.0").subscribe("AuctionEnded").subscribe("Refund*");
/// assert_eq!(info.name(), "payment");
/// assert_eq!(info.subscriptions(), ["AuctionEnded", "Refund*"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Unique plugin name; also the consumer group name.
    name: String,
    /// The plugin's version, reported in logs and metrics.
    version: String,
    /// Event types to receive: exact names or glob patterns (`*`, `Payment*`).
    subscriptions: Vec<String>,
}

impl PluginInfo {
    /// A plugin called `name` at `version` (e.g. `env!("CARGO_PKG_VERSION")`), subscribed to
    /// nothing yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            subscriptions: Vec::new(),
        }
    }

    /// Also receive events whose type matches `pattern`: an exact type (`AuctionEnded`) or a
    /// glob pattern (`*`, `Payment*`).
    #[must_use]
    pub fn subscribe(mut self, pattern: impl Into<String>) -> Self {
        self.subscriptions.push(pattern.into());
        self
    }

    /// Also receive events matching each of `patterns`.
    #[must_use]
    pub fn subscribe_all<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.subscriptions
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Unique plugin name; also the consumer group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Event type patterns to receive.
    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }
}

impl From<PluginInfo> for types::PluginInfo {
    fn from(info: PluginInfo) -> Self {
        Self {
            name: info.name,
            version: info.version,
            subscriptions: info.subscriptions,
        }
    }
}
