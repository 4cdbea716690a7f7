//! How a candidate is rolled out: the `[rollout]` table of its sidecar (`payment.next.toml`
//! beside `payment.next.wasm`), or the flags of `evhost rollout start`.
//!
//! ```toml
//! [rollout]
//! mode = "canary"          # "shadow" (default): the candidate handles a copy of every event,
//!                          # its effects compared and dropped; "canary": it handles a share
//!                          # of the keys for real
//! share_pct = 10           # canary: the share of partition keys it handles
//! window_ms = 30000        # the candidate is judged over windows this long
//! min_calls = 20           # ... once it made this many calls in the window
//! failure_margin_pct = 5   # roll back when its failure rate exceeds the live one's by more
//! p99_margin_pct = 50      # roll back when its p99 exceeds the live one's by more than this
//! p99_floor_ms = 5         # ... and by more than this (microsecond noise is no reason)
//! promote = "manual"       # "auto": promoted after `clean_windows` clean windows in a row
//! clean_windows = 3
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the candidate meets events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// It handles a copy of every event beside the live version; its effects are compared
    /// with the live ones and never committed.
    #[default]
    Shadow,
    /// It handles the events of a share of the keys, for real; the rest stay with the live
    /// version.
    Canary,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
        })
    }
}

/// When a candidate that stayed clean takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Promotion {
    /// Only when told (`evhost rollout promote`).
    #[default]
    Manual,
    /// After [`RolloutPlan::clean_windows`] clean windows in a row.
    Auto,
}

/// The rules of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Shadow or canary.
    pub mode: Mode,
    /// Canary: the share of keys, in percent (0–100).
    pub share_pct: f64,
    /// Length of a judging window.
    #[serde(with = "millis")]
    pub window: Duration,
    /// Candidate calls a window needs before it is judged.
    pub min_calls: u64,
    /// Rollback when the candidate's failure rate exceeds the live one's by more than this
    /// many percentage points.
    pub failure_margin_pct: f64,
    /// Rollback when the candidate's p99 exceeds the live one's by more than this percentage
    /// of it...
    pub p99_margin_pct: f64,
    /// ... and by more than this.
    #[serde(with = "millis")]
    pub p99_floor: Duration,
    /// Manual or automatic promotion.
    pub promote: Promotion,
    /// Clean windows in a row before an automatic promotion.
    pub clean_windows: u32,
}

impl Default for RolloutPlan {
    fn default() -> Self {
        RolloutPlan {
            mode: Mode::Shadow,
            share_pct: 10.0,
            window: Duration::from_secs(30),
            min_calls: 20,
            failure_margin_pct: 5.0,
            p99_margin_pct: 50.0,
            p99_floor: Duration::from_millis(5),
            promote: Promotion::Manual,
            clean_windows: 3,
        }
    }
}

/// The `[rollout]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutSection {
    mode: Option<Mode>,
    share_pct: Option<f64>,
    window_ms: Option<u64>,
    min_calls: Option<u64>,
    failure_margin_pct: Option<f64>,
    p99_margin_pct: Option<f64>,
    p99_floor_ms: Option<u64>,
    promote: Option<Promotion>,
    clean_windows: Option<u32>,
}

impl RolloutSection {
    /// The plan, defaults filled in; a value out of range is an error naming its key.
    pub fn plan(self) -> Result<RolloutPlan, String> {
        let defaults = RolloutPlan::default();
        let share_pct = self.share_pct.unwrap_or(defaults.share_pct);
        if !(0.0..=100.0).contains(&share_pct) {
            return Err(format!(
                "rollout.share_pct must be between 0 and 100, not {share_pct}"
            ));
        }
        let percent = |name: &str, value: Option<f64>, default: f64| match value {
            Some(value) if !value.is_finite() || value < 0.0 => Err(format!(
                "rollout.{name} must be a percentage of at least 0, not {value}"
            )),
            value => Ok(value.unwrap_or(default)),
        };
        let window = Duration::from_millis(self.window_ms.unwrap_or(30_000));
        if window < Duration::from_millis(100) {
            return Err("rollout.window_ms must be at least 100".into());
        }
        Ok(RolloutPlan {
            mode: self.mode.unwrap_or(defaults.mode),
            share_pct,
            window,
            min_calls: self.min_calls.unwrap_or(defaults.min_calls).max(1),
            failure_margin_pct: percent(
                "failure_margin_pct",
                self.failure_margin_pct,
                defaults.failure_margin_pct,
            )?,
            p99_margin_pct: percent(
                "p99_margin_pct",
                self.p99_margin_pct,
                defaults.p99_margin_pct,
            )?,
            p99_floor: self
                .p99_floor_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.p99_floor),
            promote: self.promote.unwrap_or(defaults.promote),
            clean_windows: self.clean_windows.unwrap_or(defaults.clean_windows).max(1),
        })
    }
}

impl RolloutPlan {
    /// The keys of the `[rollout]` table with this plan's values, and whether each value is
    /// text.
    fn fields(&self) -> [(&'static str, String, bool); 9] {
        let promote = match self.promote {
            Promotion::Manual => "manual",
            Promotion::Auto => "auto",
        };
        [
            ("mode", self.mode.to_string(), true),
            ("share_pct", self.share_pct.to_string(), false),
            ("window_ms", self.window.as_millis().to_string(), false),
            ("min_calls", self.min_calls.to_string(), false),
            (
                "failure_margin_pct",
                self.failure_margin_pct.to_string(),
                false,
            ),
            ("p99_margin_pct", self.p99_margin_pct.to_string(), false),
            (
                "p99_floor_ms",
                self.p99_floor.as_millis().to_string(),
                false,
            ),
            ("promote", promote.to_string(), true),
            ("clean_windows", self.clean_windows.to_string(), false),
        ]
    }

    /// The `[rollout]` table of this plan, for the sidecar `evhost rollout start` writes.
    pub fn to_toml(&self) -> String {
        let mut text = "[rollout]\n".to_string();
        for (key, value, is_text) in self.fields() {
            if is_text {
                text.push_str(&format!("{key} = \"{value}\"\n"));
            } else {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    }

    /// The plan as the query parameters of `POST /api/plugins/{name}/rollout` (the same keys).
    pub fn to_query(&self) -> String {
        self.fields()
            .iter()
            .map(|(key, value, _)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Durations as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RolloutPlan, String> {
        #[derive(Deserialize)]
        struct File {
            rollout: RolloutSection,
        }
        let file: File = toml::from_str(text).map_err(|err| err.to_string())?;
        file.rollout.plan()
    }

    #[test]
    fn an_empty_table_is_a_manual_shadow_rollout() {
        assert_eq!(parse("[rollout]\n"), Ok(RolloutPlan::default()));
    }

    #[test]
    fn the_written_table_reads_back_as_the_same_plan() {
        let plan = RolloutPlan {
            mode: Mode::Canary,
            share_pct: 25.0,
            window: Duration::from_millis(1500),
            min_calls: 7,
            failure_margin_pct: 2.5,
            p99_margin_pct: 10.0,
            p99_floor: Duration::from_millis(1),
            promote: Promotion::Auto,
            clean_windows: 2,
        };
        assert_eq!(parse(&plan.to_toml()), Ok(plan));
    }

    #[test]
    fn values_out_of_range_name_their_key() {
        let share = parse("[rollout]\nshare_pct = 120\n").expect_err("share over 100");
        assert!(share.contains("rollout.share_pct"), "{share}");
        let margin = parse("[rollout]\nfailure_margin_pct = -1\n").expect_err("negative");
        assert!(margin.contains("rollout.failure_margin_pct"), "{margin}");
        let unknown = parse("[rollout]\nshares = 1\n").expect_err("unknown key");
        assert!(unknown.contains("shares"), "{unknown}");
    }
}
