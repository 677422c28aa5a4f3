//! An app-wide pause asked for by the server: a 429 or 503 with
//! `Retry-After` means "leave me alone until then", not "retry this one
//! call later". Every request of the client (and of its clones: all the
//! app's workers, its group sync and sweeps) waits until the pause is over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest pause a server may impose when no cap is set.
pub const DEFAULT_PAUSE_CAP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct AppPause {
    state: Mutex<PauseState>,
}

#[derive(Debug, Clone, Copy)]
struct PauseState {
    until: Option<Instant>,
    cap: Duration,
}

impl Default for AppPause {
    fn default() -> Self {
        Self {
            state: Mutex::new(PauseState {
                until: None,
                cap: DEFAULT_PAUSE_CAP,
            }),
        }
    }
}

/// The end of the pause after a server asked for `asked` at `now`: never
/// shortened by a later, shorter answer, and never longer than `cap` from
/// now, so a server cannot park the app for an hour.
pub fn extended(current: Option<Instant>, now: Instant, asked: Duration, cap: Duration) -> Instant {
    let wanted = now + asked.min(cap);
    match current {
        Some(until) if until > wanted => until,
        _ => wanted,
    }
}

impl AppPause {
    /// Sets the longest pause a server may ask for.
    pub fn set_cap(&self, cap: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.cap = cap;
        }
    }

    /// The server asked for `asked` of quiet.
    pub fn pause_for(&self, asked: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.until = Some(extended(s.until, Instant::now(), asked, s.cap));
        }
    }

    /// How long the app is still paused; zero when it is not.
    pub fn remaining(&self) -> Duration {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.until)
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Waits until the pause is over (it may be extended while waiting).
    pub async fn wait(&self) {
        loop {
            let left = self.remaining();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_capped_and_never_shortened() {
        let now = Instant::now();
        let cap = Duration::from_secs(30);
        let s = Duration::from_secs;
        assert_eq!(extended(None, now, s(2), cap), now + s(2));
        assert_eq!(extended(None, now, s(3600), cap), now + cap);
        let long = now + s(10);
        assert_eq!(extended(Some(long), now, s(1), cap), long, "not shortened");
        assert_eq!(extended(Some(now + s(1)), now, s(5), cap), now + s(5));
    }

    #[tokio::test]
    async fn waiting_ends_when_the_pause_does() {
        let p = AppPause::default();
        assert!(p.remaining().is_zero());
        p.pause_for(Duration::from_millis(80));
        assert!(!p.remaining().is_zero());
        let started = Instant::now();
        p.wait().await;
        assert!(started.elapsed() >= Duration::from_millis(70));
        assert!(p.remaining().is_zero());
    }
}
