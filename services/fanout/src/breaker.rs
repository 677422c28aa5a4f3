//! A circuit breaker per app, judging the app's health, not one person's.
//!
//! A server that answers 500 for one person's create (a duplicate userName
//! it cannot report as 409) is healthy for everyone else; pausing the app
//! for it would delay every other person's change. So the breaker counts
//! *distinct persons* whose latest job failed within a sliding window:
//! the circuit opens when at least `threshold` (never fewer than two)
//! distinct persons failed and they are at least `error_rate` of the
//! persons seen in the window. An app that is down (timeouts, refused
//! connections, 5xx for everyone) fails every person's job and opens it
//! quickly; one person failing over and over never does — that person's
//! job runs out of deliveries and is dead-lettered instead.
//!
//! Once open, no calls go out until a cool-down has passed; then one probe
//! job is let through. Its success closes the circuit; its failure reopens
//! it with a doubled cool-down (up to a maximum). Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Distinct persons with a failed job in the window that open the
    /// circuit; values below 2 count as 2.
    pub threshold: u32,
    /// Share (0..=1) of the persons seen in the window whose latest job
    /// failed, needed as well as `threshold`.
    pub error_rate: f64,
    /// How far back outcomes count.
    pub window: Duration,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// One probe is out; everything else waits for its verdict.
    HalfOpen {
        cooldown: Duration,
        probe: Option<Uuid>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the single probe of a half-open circuit.
    Probe,
    /// Not now; try again after this long.
    No {
        retry_in: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened {
        cooldown: Duration,
        /// Distinct persons whose latest job failed in the window.
        failing: usize,
        /// Distinct persons with a job in the window.
        seen: usize,
    },
    Closed,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// Each person's latest outcome in the window: when, and whether healthy.
    latest: HashMap<Uuid, (Instant, bool)>,
}

/// How long others wait while a probe is out.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            latest: HashMap::new(),
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether a job for `person` may call the app now.
    pub fn admit(&mut self, person: Uuid, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until, cooldown } if now >= until => {
                self.state = State::HalfOpen {
                    cooldown,
                    probe: Some(person),
                };
                Admit::Probe
            }
            State::Open { until, .. } => Admit::No {
                retry_in: until - now,
            },
            State::HalfOpen { .. } => Admit::No {
                retry_in: PROBE_WAIT,
            },
        }
    }

    /// Time until a job could be admitted; zero when it could be now.
    pub fn wait(&self, now: Instant) -> Duration {
        match self.state {
            State::Closed => Duration::ZERO,
            State::Open { until, .. } => until.saturating_duration_since(now),
            State::HalfOpen { .. } => PROBE_WAIT,
        }
    }

    /// The outcome of an admitted job for `person`: `true` when the app
    /// answered, even with a refusal; `false` for failures that retrying
    /// could fix (5xx, 429, timeouts, connection errors).
    pub fn record(&mut self, person: Uuid, healthy: bool, now: Instant) -> Option<Transition> {
        match self.state {
            State::Closed => {
                self.latest.insert(person, (now, healthy));
                let (failing, seen) = self.tally(now);
                let threshold = self.config.threshold.max(2) as usize;
                let rate = self.config.error_rate.clamp(0.0, 1.0);
                if failing >= threshold && failing as f64 >= rate * seen as f64 {
                    self.open(self.config.cooldown, now, failing, seen)
                } else {
                    None
                }
            }
            // Only the probe's own verdict decides; jobs admitted before the
            // circuit opened report late and are not the probe.
            State::HalfOpen { probe, .. } if probe != Some(person) => None,
            State::HalfOpen { .. } if healthy => {
                self.state = State::Closed;
                self.latest.clear();
                Some(Transition::Closed)
            }
            State::HalfOpen { cooldown, .. } => {
                let (failing, seen) = (1, 1);
                self.open(
                    (cooldown * 2).min(self.config.max_cooldown),
                    now,
                    failing,
                    seen,
                )
            }
            // Late reports do not move an open circuit.
            State::Open { .. } => None,
        }
    }

    /// The probe could not be judged (it failed for reasons of our own):
    /// back to open with the same cool-down, so another job probes later.
    pub fn abandon_probe(&mut self, now: Instant) {
        if let State::HalfOpen { cooldown, .. } = self.state {
            self.state = State::Open {
                until: now + cooldown,
                cooldown,
            };
        }
    }

    /// Forgets outcomes older than the window; returns the distinct persons
    /// whose latest outcome failed, and all distinct persons, in it.
    fn tally(&mut self, now: Instant) -> (usize, usize) {
        let window = self.config.window;
        self.latest
            .retain(|_, (at, _)| now.saturating_duration_since(*at) <= window);
        let failing = self.latest.values().filter(|(_, ok)| !ok).count();
        (failing, self.latest.len())
    }

    fn open(
        &mut self,
        cooldown: Duration,
        now: Instant,
        failing: usize,
        seen: usize,
    ) -> Option<Transition> {
        self.state = State::Open {
            until: now + cooldown,
            cooldown,
        };
        self.latest.clear();
        Some(Transition::Opened {
            cooldown,
            failing,
            seen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            threshold: 3,
            error_rate: 0.5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        }
    }

    fn breaker() -> Breaker {
        Breaker::new(config())
    }

    fn persons(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    fn open(b: &mut Breaker, t: Instant) {
        for p in persons(3) {
            b.record(p, false, t);
        }
        assert!(!b.is_closed());
    }

    #[test]
    fn one_person_failing_again_and_again_never_opens_it() {
        let t = Instant::now();
        let mut b = breaker();
        let stuck = Uuid::new_v4();
        for i in 0..1000 {
            assert_eq!(b.record(stuck, false, t + Duration::from_millis(i)), None);
        }
        assert!(b.is_closed());
    }

    #[test]
    fn distinct_persons_failing_open_it() {
        let t = Instant::now();
        let mut b = breaker();
        let ps = persons(3);
        assert_eq!(b.record(ps[0], false, t), None);
        assert_eq!(b.record(ps[1], false, t), None);
        assert_eq!(
            b.record(ps[2], false, t),
            Some(Transition::Opened {
                cooldown: Duration::from_secs(10),
                failing: 3,
                seen: 3
            })
        );
        assert_eq!(
            b.admit(ps[0], t + Duration::from_secs(4)),
            Admit::No {
                retry_in: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn a_low_error_rate_keeps_it_closed() {
        let t = Instant::now();
        let mut b = breaker();
        // Three failing persons among ten healthy ones: 3/13 < 50 %.
        for p in persons(10) {
            b.record(p, true, t);
        }
        for p in persons(3) {
            assert_eq!(b.record(p, false, t), None);
        }
        assert!(b.is_closed());
    }

    #[test]
    fn a_later_success_clears_a_persons_failure() {
        let t = Instant::now();
        let mut b = breaker();
        let ps = persons(3);
        b.record(ps[0], false, t);
        b.record(ps[1], false, t);
        b.record(ps[0], true, t);
        assert_eq!(b.record(ps[2], false, t), None, "only two are failing now");
    }

    #[test]
    fn failures_older_than_the_window_no_longer_count() {
        let t = Instant::now();
        let mut b = breaker();
        let ps = persons(3);
        b.record(ps[0], false, t);
        b.record(ps[1], false, t);
        assert_eq!(b.record(ps[2], false, t + Duration::from_secs(61)), None);
        assert!(b.is_closed());
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let t = Instant::now();
        let mut b = breaker();
        open(&mut b, t);
        let (probe, other) = (Uuid::new_v4(), Uuid::new_v4());
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(probe, later), Admit::Probe);
        assert!(
            matches!(b.admit(other, later), Admit::No { .. }),
            "only one probe at a time"
        );
        assert_eq!(
            b.record(other, true, later),
            None,
            "a late report is not the probe's verdict"
        );
        // The probe fails: reopened for twice as long.
        assert!(matches!(
            b.record(probe, false, later),
            Some(Transition::Opened { cooldown, .. }) if cooldown == Duration::from_secs(20)
        ));
        assert!(matches!(
            b.admit(probe, later + Duration::from_secs(19)),
            Admit::No { .. }
        ));
        let again = later + Duration::from_secs(20);
        assert_eq!(b.admit(probe, again), Admit::Probe);
        // Fails again: capped at the maximum.
        assert!(matches!(
            b.record(probe, false, again),
            Some(Transition::Opened { cooldown, .. }) if cooldown == Duration::from_secs(25)
        ));
        let last = again + Duration::from_secs(25);
        assert_eq!(b.admit(probe, last), Admit::Probe);
        assert_eq!(b.record(probe, true, last), Some(Transition::Closed));
        assert_eq!(b.admit(other, last), Admit::Yes);
        assert!(b.is_closed());
    }

    #[test]
    fn an_abandoned_probe_lets_a_later_job_probe() {
        let t = Instant::now();
        let mut b = breaker();
        open(&mut b, t);
        let p = Uuid::new_v4();
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(p, later), Admit::Probe);
        b.abandon_probe(later);
        assert!(matches!(
            b.admit(p, later + Duration::from_secs(9)),
            Admit::No { .. }
        ));
        assert_eq!(
            b.admit(p, later + Duration::from_secs(10)),
            Admit::Probe,
            "same cool-down, not doubled"
        );
    }

    #[test]
    fn late_reports_do_not_reset_an_open_circuit() {
        let t = Instant::now();
        let mut b = breaker();
        open(&mut b, t);
        assert_eq!(b.record(Uuid::new_v4(), true, t), None);
        assert!(matches!(b.admit(Uuid::new_v4(), t), Admit::No { .. }));
    }

    proptest! {
        /// Whatever one person's outcomes and their timing, and whatever
        /// the threshold, one person alone never opens the circuit.
        #[test]
        fn one_person_never_opens_it(
            outcomes in prop::collection::vec((any::<bool>(), 0u64..5_000), 1..300),
            threshold in 0u32..10,
            rate in 0.0f64..=1.0,
        ) {
            let mut b = Breaker::new(BreakerConfig { threshold, error_rate: rate, ..config() });
            let person = Uuid::new_v4();
            let mut t = Instant::now();
            for (healthy, step) in outcomes {
                t += Duration::from_millis(step);
                prop_assert_eq!(b.admit(person, t), Admit::Yes);
                prop_assert_eq!(b.record(person, healthy, t), None);
            }
        }

        /// K distinct persons failing within the window open it, whatever
        /// their order and however often each one fails, once K reaches
        /// the threshold and nobody in the window succeeded.
        #[test]
        fn k_distinct_persons_failing_open_it(
            k in 2usize..12,
            repeats in prop::collection::vec(1usize..4, 12),
            order_seed in any::<u64>(),
            spread_ms in 0u64..59_000,
        ) {
            let threshold = k as u32;
            let mut b = Breaker::new(BreakerConfig { threshold, ..config() });
            let ps = persons(k);
            let mut reports: Vec<Uuid> = ps
                .iter()
                .zip(&repeats)
                .flat_map(|(p, n)| std::iter::repeat_n(*p, *n))
                .collect();
            // A cheap deterministic shuffle: order must not matter.
            let n = reports.len();
            for i in (1..n).rev() {
                let j = (order_seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize;
                reports.swap(i, j);
            }
            let t = Instant::now();
            let step = spread_ms / n as u64;
            let mut opened = None;
            for (i, p) in reports.iter().enumerate() {
                if let Some(tr) = b.record(*p, false, t + Duration::from_millis(step * i as u64)) {
                    opened = Some(tr);
                    break;
                }
            }
            prop_assert!(
                matches!(opened, Some(Transition::Opened { failing, .. }) if failing == k),
                "{:?}", opened
            );
        }
    }
}
