//! Leader election through a `coordination.k8s.io/v1` Lease, so that two replicas of the
//! operator can run and only one reconciles.
//!
//! The protocol is client-go's: the holder renews `spec.renewTime` every `renew_every`; another
//! replica takes the Lease over only when `renewTime + leaseDurationSeconds` has passed. Every
//! write is a `replace` carrying the `resourceVersion` read, so two replicas racing for an expired
//! Lease cannot both win (the loser gets 409 Conflict). A replica that cannot renew before its
//! Lease would expire stops reconciling (see [`crate::controller::run`]); on a clean shutdown the
//! holder releases the Lease so that the other replica takes over at once.
//!
//! [`decide`] is the pure part; [`LeaderElector`] does the API calls.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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

/// The decision for `lease` as read at `now`, for the replica `identity`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
            if renewed.is_none_or(|t| t + duration < now) {
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
    lease_duration: Duration,
}

impl LeaderElector {
    /// Elects among replicas sharing the Lease `name` in `namespace`; this replica is `identity`
    /// (its pod name).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
        }
    }

    /// How long a Lease stays valid without renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// Acquires or renews the Lease; `true` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.name).await?;
        let decision = decide(lease.as_ref(), &self.identity, now);
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
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1)
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

    fn lease(holder: Option<&str>, renewed_at: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn only_an_expired_or_free_lease_is_taken_over() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&lease(Some("a"), 999)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&lease(Some("b"), 990)), "a", now), Decision::Follow);
        assert_eq!(decide(Some(&lease(Some("b"), 980)), "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&lease(None, 999)), "a", now), Decision::TakeOver);
    }
}
