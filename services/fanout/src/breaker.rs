//! A circuit breaker per app. When an app keeps failing, hammering it
//! helps nobody: after `threshold` failed jobs in a row the circuit opens
//! and no calls go out until a cool-down has passed; then one probe job is
//! let through. Its success closes the circuit; its failure reopens it with
//! a doubled cool-down (up to a maximum). Pure: time is passed in.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    pub threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// One probe is out; everything else waits for its verdict.
    HalfOpen {
        cooldown: Duration,
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
    Opened { cooldown: Duration },
    Closed,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
}

/// How long others wait while a probe is out.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Whether a job may call the app now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until, cooldown } if now >= until => {
                self.state = State::HalfOpen { cooldown };
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
            State::Closed { .. } => Duration::ZERO,
            State::Open { until, .. } => until.saturating_duration_since(now),
            State::HalfOpen { .. } => PROBE_WAIT,
        }
    }

    /// The outcome of an admitted job: `true` when the app answered, even
    /// with a refusal; `false` for failures that retrying could fix.
    pub fn record(&mut self, healthy: bool, now: Instant) -> Option<Transition> {
        match (self.state, healthy) {
            (State::Closed { .. }, true) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= self.config.threshold.max(1) {
                    self.open(self.config.cooldown, now)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen { .. }, true) => {
                self.state = State::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (State::HalfOpen { cooldown }, false) => {
                self.open((cooldown * 2).min(self.config.max_cooldown), now)
            }
            // Jobs admitted before the circuit opened report late; the
            // open circuit stands.
            (State::Open { .. }, _) => None,
        }
    }

    /// The probe could not be judged (it failed for reasons of our own):
    /// back to open with the same cool-down, so another job probes later.
    pub fn abandon_probe(&mut self, now: Instant) {
        if let State::HalfOpen { cooldown } = self.state {
            self.state = State::Open {
                until: now + cooldown,
                cooldown,
            };
        }
    }

    fn open(&mut self, cooldown: Duration, now: Instant) -> Option<Transition> {
        self.state = State::Open {
            until: now + cooldown,
            cooldown,
        };
        Some(Transition::Opened { cooldown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = breaker();
        assert_eq!(b.record(false, t), None);
        assert_eq!(b.record(false, t), None);
        assert_eq!(b.record(true, t), None, "a success resets the count");
        assert_eq!(b.record(false, t), None);
        assert_eq!(b.record(false, t), None);
        assert_eq!(
            b.record(false, t),
            Some(Transition::Opened {
                cooldown: Duration::from_secs(10)
            })
        );
        assert_eq!(
            b.admit(t + Duration::from_secs(4)),
            Admit::No {
                retry_in: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admit::Probe);
        assert!(
            matches!(b.admit(later), Admit::No { .. }),
            "only one probe at a time"
        );
        // The probe fails: reopened for twice as long.
        assert_eq!(
            b.record(false, later),
            Some(Transition::Opened {
                cooldown: Duration::from_secs(20)
            })
        );
        assert!(matches!(
            b.admit(later + Duration::from_secs(19)),
            Admit::No { .. }
        ));
        let again = later + Duration::from_secs(20);
        assert_eq!(b.admit(again), Admit::Probe);
        // Fails again: capped at the maximum.
        assert_eq!(
            b.record(false, again),
            Some(Transition::Opened {
                cooldown: Duration::from_secs(25)
            })
        );
        let last = again + Duration::from_secs(25);
        assert_eq!(b.admit(last), Admit::Probe);
        assert_eq!(b.record(true, last), Some(Transition::Closed));
        assert_eq!(b.admit(last), Admit::Yes);
        assert!(b.is_closed());
    }

    #[test]
    fn an_abandoned_probe_lets_a_later_job_probe() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admit::Probe);
        b.abandon_probe(later);
        assert!(matches!(
            b.admit(later + Duration::from_secs(9)),
            Admit::No { .. }
        ));
        assert_eq!(
            b.admit(later + Duration::from_secs(10)),
            Admit::Probe,
            "same cool-down, not doubled"
        );
    }

    #[test]
    fn late_reports_do_not_reset_an_open_circuit() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t);
        }
        assert_eq!(b.record(true, t), None);
        assert!(matches!(b.admit(t), Admit::No { .. }));
    }
}
