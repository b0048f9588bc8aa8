//! Leader election through a `coordination.k8s.io/v1` Lease, so that two replicas of the
//! operator can run and only one reconciles.
//!
//! The protocol is client-go's (`k8s.io/client-go/tools/leaderelection`), with its timing:
//! - the holder renews every [`Timing::retry_period`]; each renewal must succeed within
//!   [`Timing::renew_deadline`] of the last successful one (every call bounded by what is left),
//!   or the holder steps down, and stops writing, while its Lease is still valid for the others;
//! - another replica takes the Lease over only when it has seen the same Lease record (holder,
//!   times, duration) unchanged for [`Timing::lease_duration`] on its own monotonic clock. No
//!   replica compares another machine's `renewTime` with its own wall clock, so clock skew
//!   between nodes cannot make two leaders;
//! - every write is a `replace` carrying the `resourceVersion` read, so two replicas racing for
//!   an expired Lease cannot both win (the loser gets 409 Conflict);
//! - on a clean shutdown the holder releases the Lease so that the other replica takes over at
//!   once.
//!
//! [`decide`] is the pure part; [`LeaderElector`] does the API calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Another replica holds it.
    Follow,
}

/// The election's timing (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait, after the Lease record last changed as they saw it, before taking it.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal; shorter than
    /// `lease_duration`, so the holder has stopped before anyone may take over.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others look.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The decision for `lease` as read, for the replica `identity`, when this replica has seen the
/// same Lease record for `unchanged_for` (`None`: it has just changed, or is seen for the first
/// time).
pub fn decide(lease: Option<&Lease>, identity: &str, unchanged_for: Option<Duration>) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15);
            if unchanged_for.is_some_and(|d| d >= Duration::from_secs(seconds)) {
                Decision::TakeOver
            } else {
                Decision::Follow
            }
        }
    }
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease record (its spec) last seen and when, on this replica's monotonic clock.
    observed: Arc<Mutex<Option<(LeaseSpec, Instant)>>>,
}

impl LeaderElector {
    /// Elects among replicas sharing the Lease `name` in `namespace`; this replica is `identity`
    /// (its pod name).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        let timing = Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 7).max(Duration::from_millis(100)),
        };
        Self::with_timing(client, namespace, name, identity, timing)
    }

    /// As [`LeaderElector::new`], with explicit timing.
    pub fn with_timing(client: Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: Arc::new(Mutex::new(None)),
        }
    }

    /// The election's timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// How long a Lease stays valid without renewal.
    pub fn lease_duration(&self) -> Duration {
        self.timing.lease_duration
    }

    /// How long the Lease record read now has been seen unchanged (`None` when it just changed).
    fn unchanged_for(&self, lease: Option<&Lease>) -> Option<Duration> {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lease) = lease else {
            *observed = None;
            return None;
        };
        let now = Instant::now();
        let current = lease.spec.clone().unwrap_or_default();
        match observed.as_ref() {
            Some((seen, since)) if *seen == current => Some(now.duration_since(*since)),
            _ => {
                *observed = Some((current, now));
                None
            }
        }
    }

    /// Acquires or renews the Lease; `true` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.name).await?;
        let decision = decide(lease.as_ref(), &self.identity, self.unchanged_for(lease.as_ref()));
        let result = match (decision, lease) {
            (Decision::Follow, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.lease_seconds());
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let previous = lease.spec.take();
                lease.spec = Some(self.spec(now, previous.as_ref()));
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            // Another replica wrote first: it leads.
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up, if this replica holds it, so another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(previous.and_then(|p| p.lease_transitions).map_or(0, |t| t + 1)),
            ..LeaseSpec::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(1_000).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn only_a_free_lease_or_one_seen_unchanged_for_its_duration_is_taken_over() {
        let seconds = |s| Some(Duration::from_secs(s));
        assert_eq!(decide(None, "a", None), Decision::Create);
        assert_eq!(decide(Some(&lease(Some("a"))), "a", seconds(60)), Decision::Renew);
        assert_eq!(decide(Some(&lease(Some("b"))), "a", None), Decision::Follow);
        assert_eq!(decide(Some(&lease(Some("b"))), "a", seconds(14)), Decision::Follow);
        assert_eq!(decide(Some(&lease(Some("b"))), "a", seconds(15)), Decision::TakeOver);
        assert_eq!(decide(Some(&lease(None)), "a", None), Decision::TakeOver);
    }

    #[test]
    fn a_renew_time_far_in_the_past_is_not_expiry_by_itself() {
        // The holder's clock may be minutes behind ours: what counts is that the record changes.
        let mut old = lease(Some("b"));
        old.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::from_second(1).unwrap()));
        assert_eq!(decide(Some(&old), "a", None), Decision::Follow);
    }

    #[test]
    fn the_holder_steps_down_before_others_may_take_over() {
        let timing = Timing::default();
        assert!(timing.renew_deadline + timing.retry_period < timing.lease_duration);
        let client_side = Timing {
            lease_duration: Duration::from_secs(15),
            ..Timing::default()
        };
        assert_eq!(client_side, Timing::default());
    }
}
