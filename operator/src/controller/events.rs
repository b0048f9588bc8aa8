//! Kubernetes Events, only when something changed: [`changes`] compares the previous status with
//! the new one (pure), and [`Events`] publishes the result through the one shared [`Recorder`].
//! A condition that turns False is a Warning (except pods still starting); one that turns True
//! again, and a new policy in force, are Normal events. An unchanged status yields no event, so a
//! resync never adds noise.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use palisade_crds::McpServerStatus;
use palisade_crds::conditions::{self, reason};

use super::status::condition;

/// Reason of the Normal event when a new compiled policy is in force.
pub const POLICY_ROLLED_OUT: &str = "PolicyRolledOut";

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Warning or Normal.
    pub warning: bool,
    /// CamelCase reason (a condition reason, or [`POLICY_ROLLED_OUT`]).
    pub reason: String,
    /// The message.
    pub note: String,
}

/// The events that the step from `previous` to `next` deserves.
pub fn changes(previous: Option<&McpServerStatus>, next: &McpServerStatus) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let before = previous.map_or(&empty, |p| &p.conditions);
    for type_ in [
        conditions::POLICY_VALID,
        conditions::DOCUMENTS_READY,
        conditions::SECRETS_READY,
        conditions::READY,
        conditions::TOOLS_PINNED,
    ] {
        let Some(now) = condition(&next.conditions, type_) else {
            continue;
        };
        let then = condition(before, type_);
        let changed = then.is_none_or(|t| t.status != now.status || t.reason != now.reason);
        if !changed {
            continue;
        }
        let turned_true = now.status == "True";
        if turned_true && then.is_none() && type_ != conditions::READY {
            // A first reconcile that finds all well says so once, through Ready.
            continue;
        }
        if !turned_true && type_ == conditions::READY && out.iter().any(|c: &Change| c.reason == now.reason) {
            // Ready is False because of a condition that was just reported.
            continue;
        }
        out.push(Change {
            // A changed upstream tool is worth a warning; a tool not pinned yet, or a proxy
            // whose pods are starting, is not.
            warning: !turned_true
                && ![reason::PODS_NOT_READY, reason::TOOLS_UNPINNED, reason::NO_INVENTORY]
                    .contains(&now.reason.as_str()),
            reason: if turned_true && type_ == conditions::READY {
                "Ready".into()
            } else {
                now.reason.clone()
            },
            note: format!("{type_}={}: {}", now.status, now.message),
        });
    }
    let old_hash = previous.and_then(|p| p.policy_hash.as_deref());
    if let Some(hash) = next.policy_hash.as_deref()
        && old_hash != Some(hash)
    {
        out.push(Change {
            warning: false,
            reason: POLICY_ROLLED_OUT.into(),
            note: format!(
                "policy {hash} in force (policies: {})",
                display_list(&next.bound_policies)
            ),
        });
    }
    out
}

fn display_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Publishes events through one shared [`Recorder`].
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events published as `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }

    /// Publishes `changes` about `object`. A failure is logged, never fatal: an event is a
    /// notice, the status is the record.
    pub async fn publish(&self, object: &ObjectReference, changes: &[Change]) {
        for change in changes {
            let event = Event {
                type_: if change.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: change.reason.clone(),
                note: Some(truncate(&change.note, 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, object).await {
                tracing::warn!(%error, reason = %change.reason, "cannot publish event");
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn status(conds: &[(&str, &str, &str)], hash: Option<&str>) -> McpServerStatus {
        McpServerStatus {
            conditions: conds
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: (*r).into(),
                    message: "m".into(),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            policy_hash: hash.map(Into::into),
            ..McpServerStatus::default()
        }
    }

    #[test]
    fn nothing_changed_means_no_event() {
        let s = status(
            &[("Ready", "True", "AsExpected"), ("PolicyValid", "True", "AsExpected")],
            Some("h"),
        );
        assert_eq!(changes(Some(&s), &s), []);
    }

    #[test]
    fn an_invalid_policy_is_one_warning_and_a_new_policy_one_normal_event() {
        let good = status(
            &[("Ready", "True", "AsExpected"), ("PolicyValid", "True", "AsExpected")],
            Some("h1"),
        );
        let bad = status(
            &[
                ("Ready", "False", "PolicyInvalid"),
                ("PolicyValid", "False", "PolicyInvalid"),
            ],
            Some("h1"),
        );
        let events = changes(Some(&good), &bad);
        assert_eq!(events.len(), 1, "Ready=False for the same reason is not reported twice");
        assert!(events.iter().all(|e| e.warning && e.reason == "PolicyInvalid"));
        let newer = status(
            &[("Ready", "True", "AsExpected"), ("PolicyValid", "True", "AsExpected")],
            Some("h2"),
        );
        let events = changes(Some(&good), &newer);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].warning, events[0].reason.as_str()),
            (false, POLICY_ROLLED_OUT)
        );
    }

    #[test]
    fn starting_pods_are_not_a_warning() {
        let first = status(
            &[
                ("Ready", "False", "PodsNotReady"),
                ("PolicyValid", "True", "AsExpected"),
            ],
            Some("h"),
        );
        let events = changes(None, &first);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events.iter().all(|e| !e.warning));
        assert!(truncate(&"é".repeat(600), 1000).len() <= 1000);
    }
}
