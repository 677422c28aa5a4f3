//! Which capabilities to plan with for one app, and when to ask again:
//! the profile decides whether `/ServiceProviderConfig` is read at all, and
//! a TTL decides how long an answer is trusted.

use std::time::{Duration, Instant};

use crate::bulk::BulkLimits;
use crate::client::ScimClient;
use crate::diff::Capabilities;
use crate::error::{CallRecord, ScimError};
use crate::profile::Profile;

/// How long discovered capabilities are trusted. An app upgrade can change
/// them, so a long-running fanout should look again now and then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityCache {
    pub ttl: Duration,
}

impl CapabilityCache {
    pub fn new(ttl: Duration) -> Self {
        CapabilityCache { ttl }
    }

    /// Whether capabilities fetched at `fetched_at` are stale at `now`.
    /// A zero TTL is always stale; a `now` before `fetched_at` (clocks are
    /// passed in, so tests can) counts as no time elapsed.
    pub fn needs_refresh(&self, fetched_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(fetched_at) >= self.ttl
    }
}

/// What `/ServiceProviderConfig` announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    pub caps: Capabilities,
    /// `None` when bulk is unsupported or its limits are missing.
    pub bulk: Option<BulkLimits>,
}

/// The outcome of [`ScimClient::discover`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscoveredCaps {
    /// What to plan with: [`Profile::apply`] of `discovered`.
    pub caps: Capabilities,
    /// What the server announced; `None` when the profile says not to ask,
    /// or the server has no discovery endpoint (404/501).
    pub discovered: Option<Capabilities>,
    /// The limits to send `POST /Bulk` with: `Some` only when the profile
    /// allows discovery and bulk, and the server announced bulk with limits.
    pub bulk: Option<BulkLimits>,
    pub fetched_at: Instant,
}

impl ScimClient {
    /// The capabilities to plan with under `profile`: reads
    /// `/ServiceProviderConfig` unless the profile turns discovery off, falls
    /// back to the profile's `assumed` capabilities when the server has no
    /// such endpoint (404/501), and applies the profile's restrictions. The
    /// record is that of the discovery call, failed or not; `None` when no
    /// call was made. Other failures (401, 5xx, transport) are errors, so a
    /// passing outage is not cached as "no capabilities".
    pub async fn discover(
        &self,
        profile: &Profile,
    ) -> Result<(DiscoveredCaps, Option<CallRecord>), ScimError> {
        let (config, record) = if profile.discovery {
            match self.service_provider().await {
                Ok(call) => (Some(call.value), Some(call.record)),
                Err(e) if e.is_discovery_unsupported() => (None, e.record().cloned()),
                Err(e) => return Err(e),
            }
        } else {
            (None, None)
        };
        let discovered = config.map(|c| c.caps);
        let found = DiscoveredCaps {
            caps: profile.apply(discovered),
            discovered,
            bulk: config.and_then(|c| c.bulk).filter(|_| profile.bulk),
            fetched_at: Instant::now(),
        };
        Ok((found, record))
    }

    /// `current` while `cache` says it is fresh (no call, `None` record),
    /// else a new [`ScimClient::discover`]. On an error the caller may keep
    /// using `current`.
    pub async fn capabilities(
        &self,
        profile: &Profile,
        cache: &CapabilityCache,
        current: Option<&DiscoveredCaps>,
    ) -> Result<(DiscoveredCaps, Option<CallRecord>), ScimError> {
        match current {
            Some(c) if !cache.needs_refresh(c.fetched_at, Instant::now()) => Ok((*c, None)),
            _ => self.discover(profile).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_after_ttl() {
        let cache = CapabilityCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!cache.needs_refresh(t0, t0));
        assert!(!cache.needs_refresh(t0, t0 + Duration::from_secs(59)));
        assert!(cache.needs_refresh(t0, t0 + Duration::from_secs(60)));
        assert!(cache.needs_refresh(t0, t0 + Duration::from_secs(3600)));
        // A clock that went backwards is not a reason to refetch.
        assert!(!cache.needs_refresh(t0 + Duration::from_secs(5), t0));
        let never = CapabilityCache::new(Duration::ZERO);
        assert!(never.needs_refresh(t0, t0));
    }
}
