//! Retrying SCIM calls: exponential backoff with full jitter, honouring the
//! server's `Retry-After`.
//!
//! A small loop rather than `backon`: backon's jitter adds to the delay
//! instead of drawing it from `[0, delay]` (full jitter), its notify hook
//! skips the final failure, and `Retry-After` would need its `adjust` hook on
//! top — more glue than this loop.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::ScimError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 0 is treated as 1.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// Upper bound of any wait, `Retry-After` included, so a server cannot
    /// park a worker for an hour.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): a
    /// uniform draw from `[0, min(max_delay, base_delay * 2^retry)]`, or the
    /// server's `Retry-After` if that is longer, all capped by `max_delay`.
    /// Full jitter spreads the retries of many workers hit by the same
    /// outage; keeping it under a short `Retry-After` (`0`, or a date already
    /// past) stops those workers from all coming back at once.
    pub fn delay(&self, retry: u32, err: &ScimError) -> Duration {
        let factor = 2u32.saturating_pow(retry);
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let jittered = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
        };
        match err.retry_after() {
            Some(asked) => asked.min(self.max_delay).max(jittered),
            None => jittered,
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not
/// [`ScimError::is_retryable`], or `policy.max_attempts` are used up; the
/// last error is returned. `on_failure` sees every failed attempt, the last
/// one included, so each can be audited with its [`crate::CallRecord`].
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
    mut on_failure: impl FnMut(&ScimError),
) -> Result<T, ScimError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ScimError>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut tried = 0;
    loop {
        tried += 1;
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        on_failure(&err);
        if tried >= max_attempts || !err.is_retryable() {
            return Err(err);
        }
        let wait = policy.delay(tried - 1, &err);
        tracing::debug!(attempt = tried, wait_ms = wait.as_millis() as u64, error = %err, "retrying SCIM call");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CallRecord;
    use std::cell::Cell;

    fn record() -> CallRecord {
        CallRecord {
            method: "GET".into(),
            path: "/Users".into(),
            status: None,
            latency_ms: 0,
            remote_id: None,
            error: None,
        }
    }

    fn http(status: u16, retry_after: Option<Duration>) -> ScimError {
        ScimError::Http {
            record: record(),
            status,
            scim_type: None,
            detail: String::new(),
            retry_after,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[test]
    fn delays_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let e = http(503, None);
        for retry in 0..40 {
            let d = p.delay(retry, &e);
            let ceiling = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(retry))
                .min(Duration::from_secs(1));
            assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
        }
        assert_eq!(
            p.delay(0, &http(429, Some(Duration::from_secs(600)))),
            Duration::from_secs(1),
            "Retry-After is capped by max_delay"
        );
        for retry in 0..10 {
            let d = p.delay(retry, &http(429, Some(Duration::from_millis(300))));
            assert!(d >= Duration::from_millis(300), "Retry-After is a minimum");
            assert!(d <= Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = Cell::new(0);
        let failures = Cell::new(0);
        let out = with_retry(
            &fast(),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(http(503, None))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| failures.set(failures.get() + 1),
        )
        .await;
        assert_eq!(out.expect("third attempt succeeds"), 3);
        assert_eq!(failures.get(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_reports_each() {
        let failures = Cell::new(0);
        let out: Result<(), _> = with_retry(
            &fast(),
            || async { Err(http(500, None)) },
            |_| failures.set(failures.get() + 1),
        )
        .await;
        assert_eq!(out.expect_err("always fails").status(), Some(500));
        assert_eq!(failures.get(), 3);
    }

    #[tokio::test]
    async fn does_not_retry_client_errors() {
        for status in [400, 401, 404, 409, 412] {
            let failures = Cell::new(0);
            let out: Result<(), _> = with_retry(
                &fast(),
                || async move { Err(http(status, None)) },
                |_| failures.set(failures.get() + 1),
            )
            .await;
            assert!(out.is_err());
            assert_eq!(failures.get(), 1, "status {status}");
        }
    }

    #[test]
    fn retryable_classification() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(http(s, None).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412, 501] {
            assert!(!http(s, None).is_retryable(), "{s}");
        }
        let t = ScimError::Transport {
            record: record(),
            detail: String::new(),
            timeout: true,
        };
        assert!(t.is_retryable());
        assert!(!ScimError::Config("x".into()).is_retryable());
    }
}
