//! Per-tenant rate limits: a token bucket of events per tenant (GCRA, through `governor`),
//! with a default for every tenant and overrides for some. A request is admitted whole or not
//! at all, so nothing of a refused request is published.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use vigil_schema::TenantId;

/// Events per second and the burst a tenant may send at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained events per second.
    pub events_per_sec: u32,
    /// Events accepted at once above the sustained rate; also the largest request.
    pub burst: u32,
}

impl Default for Rate {
    /// Sized above one ingest process's throughput, so that only a tenant given a lower rate
    /// is ever limited.
    fn default() -> Self {
        Self {
            events_per_sec: 250_000,
            burst: 500_000,
        }
    }
}

impl Rate {
    /// Checks that the rate can work.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.events_per_sec == 0 || self.burst == 0 {
            return Err(format!(
                "{key}: events_per_sec and burst must be greater than zero"
            ));
        }
        Ok(())
    }

    fn limiter(self) -> DefaultDirectRateLimiter {
        let per_sec = NonZeroU32::new(self.events_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst))
    }
}

/// One tenant's limits; each one given replaces the ingest-wide value for that tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Events per second and burst.
    pub rate: Option<Rate>,
    /// Largest request body as sent (at most the ingest-wide `max_body_bytes`, which bounds
    /// what the listener reads).
    pub max_body_bytes: Option<usize>,
    /// Largest body after gzip or zstd decoding.
    pub max_decoded_bytes: Option<usize>,
    /// Most events in one request.
    pub max_events_per_request: Option<usize>,
    /// Largest single event.
    pub max_event_bytes: Option<usize>,
    /// Most fields in one event.
    pub max_fields: Option<usize>,
    /// Deepest nesting of objects and arrays in one record.
    pub max_depth: Option<usize>,
    /// Longest syslog message (at most the listener's `syslog.max_message_bytes`, which bounds
    /// what it reads).
    pub syslog_max_message_bytes: Option<usize>,
}

impl TenantLimits {
    /// Checks the values against zero and the listener's bound.
    pub fn validate(&self, key: &str, ingest: &crate::Config) -> Result<(), String> {
        if let Some(rate) = &self.rate {
            rate.validate(&format!("{key}.rate"))?;
        }
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_decoded_bytes", self.max_decoded_bytes),
            ("max_events_per_request", self.max_events_per_request),
            ("max_event_bytes", self.max_event_bytes),
            ("max_fields", self.max_fields),
            ("max_depth", self.max_depth),
            ("syslog_max_message_bytes", self.syslog_max_message_bytes),
        ] {
            if value == Some(0) {
                return Err(format!("{key}.{name} must be greater than zero"));
            }
        }
        if let Some(depth) = self.max_depth
            && depth > 127
        {
            return Err(format!(
                "{key}.max_depth is {depth}; it must be 1 to 127 (serde_json refuses 128 levels)"
            ));
        }
        if let Some(length) = self.syslog_max_message_bytes
            && length > ingest.syslog.max_message_bytes
        {
            return Err(format!(
                "{key}.syslog_max_message_bytes: {length} is above ingest.syslog.max_message_bytes ({}), the most the listeners read",
                ingest.syslog.max_message_bytes
            ));
        }
        if let Some(body) = self.max_body_bytes
            && body > ingest.max_body_bytes
        {
            return Err(format!(
                "{key}.max_body_bytes: {body} is above ingest.max_body_bytes ({}), the most the listener reads",
                ingest.max_body_bytes
            ));
        }
        Ok(())
    }

    /// Replaces the ingest-wide values this tenant has its own of.
    pub fn apply(&self, config: &mut crate::Config) {
        if let Some(rate) = self.rate {
            config.rate = rate;
        }
        let set = |target: &mut usize, value: Option<usize>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut config.max_body_bytes, self.max_body_bytes);
        set(&mut config.max_decoded_bytes, self.max_decoded_bytes);
        set(
            &mut config.max_events_per_request,
            self.max_events_per_request,
        );
        set(&mut config.max_event_bytes, self.max_event_bytes);
        set(&mut config.max_fields, self.max_fields);
        set(&mut config.max_depth, self.max_depth);
        set(
            &mut config.syslog.max_message_bytes,
            self.syslog_max_message_bytes,
        );
    }
}

/// Why events were not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limited {
    /// Over the rate: retry after this long.
    Wait(Duration),
    /// More events at once than the tenant's burst: never admitted as one request.
    TooMany {
        /// The events asked for.
        events: u32,
        /// The tenant's burst.
        burst: u32,
    },
}

/// Every tenant's bucket.
#[derive(Debug)]
pub struct TenantRates {
    default: Rate,
    overrides: BTreeMap<TenantId, Rate>,
    buckets: Mutex<HashMap<TenantId, Arc<DefaultDirectRateLimiter>>>,
}

impl TenantRates {
    /// Buckets with `default` for every tenant not in `overrides`.
    pub fn new(default: Rate, overrides: BTreeMap<TenantId, Rate>) -> Self {
        Self {
            default,
            overrides,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's rate.
    pub fn rate(&self, tenant: &TenantId) -> Rate {
        self.overrides.get(tenant).copied().unwrap_or(self.default)
    }

    /// Takes `events` tokens from the tenant's bucket, or says when to retry.
    pub fn admit(&self, tenant: &TenantId, events: usize) -> Result<(), Limited> {
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return if events == 0 {
                Ok(())
            } else {
                Err(Limited::TooMany {
                    events: u32::MAX,
                    burst: self.rate(tenant).burst,
                })
            };
        };
        let bucket = {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let rate = self.rate(tenant);
            Arc::clone(
                buckets
                    .entry(tenant.clone())
                    .or_insert_with(|| Arc::new(rate.limiter())),
            )
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let clock = governor::clock::DefaultClock::default();
                Err(Limited::Wait(
                    not_until.wait_time_from(governor::clock::Clock::now(&clock)),
                ))
            }
            Err(_) => Err(Limited::TooMany {
                events: n.get(),
                burst: self.rate(tenant).burst,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_its_rate_waits_and_others_do_not() {
        let slow = TenantId::new("slow").unwrap();
        let other = TenantId::new("other").unwrap();
        let rates = TenantRates::new(
            Rate::default(),
            BTreeMap::from([(
                slow.clone(),
                Rate {
                    events_per_sec: 10,
                    burst: 20,
                },
            )]),
        );
        assert_eq!(rates.admit(&slow, 20), Ok(()));
        let Err(Limited::Wait(wait)) = rates.admit(&slow, 5) else {
            panic!("over the burst must wait");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            rates.admit(&slow, 21),
            Err(Limited::TooMany {
                events: 21,
                burst: 20
            })
        );
        assert_eq!(rates.admit(&other, 100_000), Ok(()));
        assert_eq!(rates.admit(&slow, 0), Ok(()));
    }
}
