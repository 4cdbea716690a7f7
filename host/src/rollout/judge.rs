//! The judge of a rollout: each version's calls over the current window and since the start,
//! the shadow comparisons, and the verdict at the end of each window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::plan::{Mode, Promotion, RolloutPlan};
use super::stats::{Snapshot, Tally};
use super::{MAX_MISMATCHES, Mismatch, Role, Verdict};

/// The figures, under one lock.
#[derive(Debug)]
struct Tallies {
    window_started: Instant,
    live_window: Tally,
    candidate_window: Tally,
    live_total: Tally,
    candidate_total: Tally,
    /// Shadow: events compared, and those on which both agreed.
    compared: u64,
    agreed: u64,
    /// Shadow: mismatches in the current window.
    window_mismatches: u64,
    /// The latest mismatches.
    mismatches: VecDeque<Mismatch>,
    /// Clean windows in a row.
    clean_windows: u32,
}

/// What the judge knows, for status.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Figures {
    pub compared: u64,
    pub agreed: u64,
    pub mismatches: Vec<Mismatch>,
    pub live: Snapshot,
    pub candidate: Snapshot,
    pub window_elapsed: Duration,
    pub window_live: Snapshot,
    pub window_candidate: Snapshot,
    pub clean_windows: u32,
}

/// Judges one rollout by its plan.
#[derive(Debug)]
pub(super) struct Judge {
    plan: RolloutPlan,
    tallies: Mutex<Tallies>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Judge {
    pub fn new(plan: RolloutPlan, now: Instant) -> Self {
        Judge {
            plan,
            tallies: Mutex::new(Tallies {
                window_started: now,
                live_window: Tally::default(),
                candidate_window: Tally::default(),
                live_total: Tally::default(),
                candidate_total: Tally::default(),
                compared: 0,
                agreed: 0,
                window_mismatches: 0,
                mismatches: VecDeque::new(),
                clean_windows: 0,
            }),
        }
    }

    /// Counts one call of `role`.
    pub fn record(&self, role: Role, failed: bool, elapsed: Duration) {
        let mut tallies = lock(&self.tallies);
        let tallies = &mut *tallies;
        let (window, total) = match role {
            Role::Live => (&mut tallies.live_window, &mut tallies.live_total),
            Role::Candidate => (&mut tallies.candidate_window, &mut tallies.candidate_total),
        };
        window.record(failed, elapsed);
        total.record(failed, elapsed);
    }

    /// Counts a shadow comparison; `mismatch` when the versions did not agree.
    pub fn compared(&self, mismatch: Option<Mismatch>) {
        let mut tallies = lock(&self.tallies);
        tallies.compared += 1;
        let Some(mismatch) = mismatch else {
            tallies.agreed += 1;
            return;
        };
        tallies.window_mismatches += 1;
        if tallies.mismatches.len() == MAX_MISMATCHES {
            tallies.mismatches.pop_front();
        }
        tallies.mismatches.push_back(mismatch);
    }

    /// Judges the candidate at `now`. A failure rate too high rolls it back as soon as the
    /// window holds [`RolloutPlan::min_calls`] candidate calls; the p99 is judged when the
    /// window ends (it needs the whole window's calls). A window that ends with enough calls
    /// and neither (nor, in shadow, a mismatch) is clean; enough clean windows in a row
    /// promote a [`Promotion::Auto`] rollout. A window without enough calls goes on.
    pub fn judge(&self, now: Instant) -> Verdict {
        let plan = &self.plan;
        let mut tallies = lock(&self.tallies);
        let candidate = &tallies.candidate_window;
        let live = &tallies.live_window;
        if candidate.calls() < plan.min_calls {
            return Verdict::Continue;
        }
        let (candidate_failures, live_failures) = (candidate.failure_pct(), live.failure_pct());
        if candidate_failures > live_failures + plan.failure_margin_pct {
            return Verdict::RollBack(format!(
                "failure rate {candidate_failures:.1}% over {} calls against {live_failures:.1}% for the live version (margin {} points)",
                candidate.calls(),
                plan.failure_margin_pct
            ));
        }
        if now.saturating_duration_since(tallies.window_started) < plan.window {
            return Verdict::Continue;
        }
        let (candidate_p99, live_p99) = (candidate.quantile(0.99), live.quantile(0.99));
        let allowed = live_p99.mul_f64(1.0 + plan.p99_margin_pct / 100.0);
        if live.calls() > 0
            && candidate_p99 > allowed
            && candidate_p99.saturating_sub(live_p99) > plan.p99_floor
        {
            return Verdict::RollBack(format!(
                "p99 {:.2} ms over {} calls against {:.2} ms for the live version (margin {}%, floor {} ms)",
                candidate_p99.as_secs_f64() * 1000.0,
                candidate.calls(),
                live_p99.as_secs_f64() * 1000.0,
                plan.p99_margin_pct,
                plan.p99_floor.as_millis()
            ));
        }
        let clean = plan.mode == Mode::Canary || tallies.window_mismatches == 0;
        tallies.clean_windows = if clean { tallies.clean_windows + 1 } else { 0 };
        tallies.window_started = now;
        tallies.live_window = Tally::default();
        tallies.candidate_window = Tally::default();
        tallies.window_mismatches = 0;
        if plan.promote == Promotion::Auto && tallies.clean_windows >= plan.clean_windows {
            return Verdict::Promote(format!(
                "{} clean window(s) of {} ms in a row",
                tallies.clean_windows,
                plan.window.as_millis()
            ));
        }
        Verdict::Continue
    }

    /// Its figures now.
    pub fn figures(&self) -> Figures {
        let tallies = lock(&self.tallies);
        Figures {
            compared: tallies.compared,
            agreed: tallies.agreed,
            mismatches: tallies.mismatches.iter().cloned().collect(),
            live: tallies.live_total.snapshot(),
            candidate: tallies.candidate_total.snapshot(),
            window_elapsed: tallies.window_started.elapsed(),
            window_live: tallies.live_window.snapshot(),
            window_candidate: tallies.candidate_window.snapshot(),
            clean_windows: tallies.clean_windows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, promote: Promotion) -> RolloutPlan {
        RolloutPlan {
            mode,
            window: Duration::from_secs(10),
            min_calls: 10,
            promote,
            clean_windows: 2,
            ..RolloutPlan::default()
        }
    }

    fn calls(judge: &Judge, role: Role, count: u32, failing: u32, each: Duration) {
        for call in 0..count {
            judge.record(role, call < failing, each);
        }
    }

    const FAST: Duration = Duration::from_micros(100);

    #[test]
    fn a_failing_candidate_is_rolled_back_without_waiting_for_the_window() {
        let start = Instant::now();
        let judge = Judge::new(plan(Mode::Canary, Promotion::Manual), start);
        calls(&judge, Role::Live, 100, 0, FAST);
        calls(&judge, Role::Candidate, 9, 9, FAST);
        assert_eq!(judge.judge(start), Verdict::Continue, "too few calls yet");
        calls(&judge, Role::Candidate, 1, 1, FAST);
        let Verdict::RollBack(reason) = judge.judge(start) else {
            panic!("not rolled back");
        };
        assert!(
            reason.starts_with("failure rate 100.0% over 10 calls against 0.0%"),
            "{reason}"
        );
    }

    #[test]
    fn failures_within_the_margin_of_the_live_ones_are_no_reason() {
        let start = Instant::now();
        let judge = Judge::new(plan(Mode::Canary, Promotion::Manual), start);
        calls(&judge, Role::Live, 100, 20, FAST);
        calls(&judge, Role::Candidate, 100, 24, FAST);
        assert_eq!(
            judge.judge(start + Duration::from_secs(11)),
            Verdict::Continue
        );
        assert_eq!(judge.figures().clean_windows, 1);
    }

    #[test]
    fn a_slow_candidate_is_rolled_back_when_the_window_ends() {
        let start = Instant::now();
        let judge = Judge::new(plan(Mode::Canary, Promotion::Manual), start);
        calls(&judge, Role::Live, 100, 0, Duration::from_millis(1));
        calls(&judge, Role::Candidate, 100, 0, Duration::from_millis(30));
        assert_eq!(
            judge.judge(start),
            Verdict::Continue,
            "p99 waits for the window"
        );
        let Verdict::RollBack(reason) = judge.judge(start + Duration::from_secs(10)) else {
            panic!("not rolled back");
        };
        assert!(
            reason.starts_with("p99 30.00 ms over 100 calls against 1.00 ms"),
            "{reason}"
        );
    }

    #[test]
    fn clean_windows_in_a_row_promote_an_automatic_rollout() {
        let start = Instant::now();
        let judge = Judge::new(plan(Mode::Canary, Promotion::Auto), start);
        for window in 1..=2u64 {
            calls(&judge, Role::Live, 50, 0, FAST);
            calls(&judge, Role::Candidate, 50, 0, FAST);
            let verdict = judge.judge(start + Duration::from_secs(10 * window));
            if window == 1 {
                assert_eq!(verdict, Verdict::Continue);
            } else {
                assert_eq!(
                    verdict,
                    Verdict::Promote("2 clean window(s) of 10000 ms in a row".into())
                );
            }
        }
    }

    #[test]
    fn a_window_without_enough_calls_goes_on_and_a_shadow_mismatch_is_not_clean() {
        let start = Instant::now();
        let judge = Judge::new(plan(Mode::Shadow, Promotion::Auto), start);
        calls(&judge, Role::Candidate, 5, 0, FAST);
        assert_eq!(
            judge.judge(start + Duration::from_secs(60)),
            Verdict::Continue
        );
        assert_eq!(
            judge.figures().window_candidate.calls,
            5,
            "the window goes on"
        );
        calls(&judge, Role::Live, 10, 0, FAST);
        calls(&judge, Role::Candidate, 5, 0, FAST);
        judge.compared(Some(Mismatch {
            at: String::new(),
            stream: "s".into(),
            entry_id: "1-0".into(),
            event_id: "e".into(),
            diff: "d".into(),
        }));
        judge.compared(None);
        assert_eq!(
            judge.judge(start + Duration::from_secs(60)),
            Verdict::Continue
        );
        let figures = judge.figures();
        assert_eq!(figures.clean_windows, 0);
        assert_eq!((figures.compared, figures.agreed), (2, 1));
        assert_eq!(figures.window_candidate.calls, 0, "a new window began");
    }
}
