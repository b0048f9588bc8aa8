//! The status step, pure half: an McpServer's status from what the dereference step found, the
//! outcome of validation, and what the apply step applied (the Deployment as the API server
//! returned it). [`server_status`] keeps a condition's `lastTransitionTime` while its status is
//! unchanged, so an unchanged world gives an equal status and nothing is written.
//!
//! It does not write anything; [`super::reconcile`] patches the status only when it changed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use palisade_crds::McpServerStatus;
use palisade_crds::conditions::{self, reason};

use super::dereference::Missing;
use super::inventory::{self, Inventory};
use super::rollout::Rollout;
use crate::build::external_secret::{Sync, SyncState};

/// The policy outcome of one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// The policies compiled and their tests passed; this policy was applied.
    Valid {
        /// `sha256:<hex>` of the compiled PolicyDocument.
        hash: String,
        /// Names of the bound policies.
        bound: Vec<String>,
        /// How many tools some role (or no scope at all) reaches; `None` for a proxy, whose tools
        /// are its upstream's.
        reachable: Option<i32>,
        /// Tools no role reaches, sorted.
        unreachable: Vec<String>,
        /// Issuers whose keys are fetched over plain HTTP (`allowInsecureHttp: true`), sorted.
        insecure_issuers: Vec<String>,
    },
    /// The server or a policy is invalid, or a policy's test failed: nothing was applied.
    Invalid {
        /// [`reason::POLICY_INVALID`] or [`reason::POLICY_TEST_FAILED`].
        reason: &'static str,
        /// Every problem, with its object and field path.
        message: String,
    },
}

/// What happened to the ExternalSecrets the server needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalSecrets {
    /// The server needs none.
    NotNeeded,
    /// Applied.
    Applied,
    /// The ExternalSecret CRD is not installed; the rest was applied.
    NotInstalled,
}

/// Everything the status is derived from.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// `metadata.generation` of the McpServer.
    pub generation: Option<i64>,
    /// `metadata.namespace` of the McpServer.
    pub namespace: &'a str,
    /// In-cluster URL of the MCP endpoint.
    pub endpoint: String,
    /// The policy outcome.
    pub policy: PolicyOutcome,
    /// ConfigMaps of `spec.documents` that do not exist.
    pub missing_config_maps: &'a [Missing],
    /// Secrets of `spec.auth` that do not exist.
    pub missing_secrets: &'a [Missing],
    /// What happened to the ExternalSecrets.
    pub external_secrets: ExternalSecrets,
    /// The sync state of every applied ExternalSecret.
    pub synced: &'a [SyncState],
    /// The Deployment as applied; `None` when nothing was applied.
    pub deployment: Option<&'a Deployment>,
    /// The API server's refusal of a child, when applying failed.
    pub apply_error: Option<String>,
    /// What the ready pods reported against the policy that should be in force; `None` when
    /// there is no such policy (nothing valid was ever compiled).
    pub rollout: Option<Rollout>,
    /// A proxy's upstream inventory; `None` for a document server.
    pub inventory: Option<Inventory>,
    /// Whether the pods run as the restricted Pod Security Standard asks, for a server with a
    /// container upstream (`Err`: what does not); `None` otherwise.
    pub pod_security: Option<Result<(), String>>,
}

/// One condition as computed, before it is merged with the previous one.
struct Computed {
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
}

/// The status for `observation`, keeping what `previous` says where this reconcile learned
/// nothing new (the policy in force when the new one is invalid, the replicas when nothing was
/// applied).
pub fn server_status(previous: Option<&McpServerStatus>, observation: &Observation<'_>, now: &Time) -> McpServerStatus {
    let previous_or_default = previous.cloned().unwrap_or_default();
    let mut status = McpServerStatus {
        conditions: Vec::new(),
        observed_generation: observation.generation,
        endpoint: Some(observation.endpoint.clone()),
        ..previous_or_default.clone()
    };
    // NB: a policy is in force (status.policyHash) only when every ready pod reports it; applying
    // its ConfigMap is not enough (kubelet projects it into the pods up to a minute later).
    if let Some(rollout) = &observation.rollout {
        status.policy_rollout = rollout.pods.clone();
        if rollout.complete() {
            status.policy_hash = Some(rollout.desired.clone());
        }
    } else {
        status.policy_rollout = Vec::new();
    }
    if let PolicyOutcome::Valid {
        bound,
        reachable,
        unreachable,
        ..
    } = &observation.policy
        && observation.apply_error.is_none()
    {
        status.bound_policies = bound.clone();
        status.reachable_tools = *reachable;
        status.unreachable_tools = unreachable.clone();
    }
    let pods = observation.deployment.map(pods);
    if let Some(pods) = &pods {
        status.replicas = Some(pods.replicas);
        status.ready_replicas = Some(pods.ready);
    }

    let policy = policy_condition(&observation.policy, previous_or_default.policy_hash.as_deref());
    let documents = documents_condition(observation);
    let secrets = secrets_condition(observation);
    let ready = match &observation.apply_error {
        Some(message) => Computed {
            type_: conditions::READY,
            ok: false,
            reason: reason::APPLY_FAILED,
            message: format!("the API server refused a child: {message}"),
        },
        None => ready_condition(
            &[&policy, &documents, &secrets],
            pods.as_ref(),
            previous_or_default.ready_replicas,
        ),
    };
    let rolled_out = rolled_out_condition(&observation.rollout, &policy);
    // A proxy: what its upstream offers; kept from before when no pod answered this time.
    match &observation.inventory {
        None => status.upstream = None,
        Some(Inventory::Reported(reported)) => status.upstream = Some(reported.clone()),
        Some(_) => {}
    }
    let tools_pinned = observation.inventory.as_ref().map(|inventory| {
        let (ok, reason, message) = inventory::tools_pinned(inventory);
        Computed {
            type_: conditions::TOOLS_PINNED,
            ok,
            reason,
            message,
        }
    });
    let pod_security = observation.pod_security.as_ref().map(|security| match security {
        Ok(()) => Computed {
            type_: conditions::POD_SECURITY_RESTRICTED,
            ok: true,
            reason: reason::AS_EXPECTED,
            message: "every container of the pods runs as the restricted Pod Security Standard asks".into(),
        },
        Err(message) => Computed {
            type_: conditions::POD_SECURITY_RESTRICTED,
            ok: false,
            reason: reason::UPSTREAM_RUNS_AS_ROOT,
            message: message.clone(),
        },
    });
    for computed in [ready, policy, documents, secrets, rolled_out]
        .into_iter()
        .chain(tools_pinned)
        .chain(pod_security)
    {
        status.conditions.push(merge(
            &previous_or_default.conditions,
            computed,
            observation.generation,
            now,
        ));
    }
    status
}

fn rolled_out_condition(rollout: &Option<Rollout>, policy: &Computed) -> Computed {
    let Some(rollout) = rollout else {
        return Computed {
            type_: conditions::POLICY_ROLLED_OUT,
            ok: false,
            reason: policy.reason,
            message: "no valid policy was ever compiled for this server, so none is rolled out; see PolicyValid".into(),
        };
    };
    let desired = &rollout.desired;
    if rollout.ready == 0 {
        return Computed {
            type_: conditions::POLICY_ROLLED_OUT,
            ok: false,
            reason: reason::NO_READY_PODS,
            message: format!("no pod is ready, so no pod enforces policy {desired} yet"),
        };
    }
    if rollout.complete() {
        return Computed {
            type_: conditions::POLICY_ROLLED_OUT,
            ok: true,
            reason: reason::AS_EXPECTED,
            message: format!("all {} ready pods serve policy {desired}", rollout.ready),
        };
    }
    let others: Vec<String> = rollout
        .pods
        .iter()
        .filter(|p| &p.hash != desired)
        .map(|p| format!("{} on {}", p.pods, p.hash))
        .collect();
    let unanswered = if rollout.unanswered.is_empty() {
        String::new()
    } else {
        format!(" (no hash from {})", rollout.unanswered.join("; "))
    };
    Computed {
        type_: conditions::POLICY_ROLLED_OUT,
        ok: false,
        reason: reason::ROLLING_OUT,
        message: format!(
            "{} of {} ready pods serve policy {desired}; {}{unanswered}. kubelet projects a changed ConfigMap \
             into the pods within about a minute, then each server reloads it",
            rollout.on_desired(),
            rollout.ready,
            others.join(", ")
        ),
    }
}

/// The condition of `type_` in `conditions`.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn merge(previous: &[Condition], computed: Computed, generation: Option<i64>, now: &Time) -> Condition {
    let status = if computed.ok { "True" } else { "False" };
    let last_transition_time = condition(previous, computed.type_)
        .filter(|c| c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: computed.type_.to_owned(),
        status: status.to_owned(),
        reason: computed.reason.to_owned(),
        message: computed.message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn policy_condition(policy: &PolicyOutcome, in_force: Option<&str>) -> Computed {
    match policy {
        PolicyOutcome::Valid { hash, bound, .. } if bound.is_empty() => Computed {
            type_: conditions::POLICY_VALID,
            ok: true,
            reason: reason::NO_POLICY,
            message: format!(
                "no McpAccessPolicy in this namespace targets the server, so every call is denied (policy {hash}); \
                 create one whose spec.targetRefs names the server"
            ),
        },
        PolicyOutcome::Valid {
            hash,
            bound,
            insecure_issuers,
            ..
        } => Computed {
            type_: conditions::POLICY_VALID,
            ok: true,
            reason: reason::AS_EXPECTED,
            message: format!(
                "policy {hash} compiled from {} and in force{}",
                bound.join(", "),
                insecure_issuers_note(insecure_issuers)
            ),
        },
        PolicyOutcome::Invalid { reason, message } => {
            let kept = match in_force {
                Some(hash) => format!("the last valid policy ({hash}) stays in force"),
                None => "nothing was rolled out".to_owned(),
            };
            Computed {
                type_: conditions::POLICY_VALID,
                ok: false,
                reason,
                message: format!("{message}. Fix the spec; until then {kept}"),
            }
        }
    }
}

/// What `PolicyValid` adds for issuers marked `allowInsecureHttp`: nothing without any.
fn insecure_issuers_note(issuers: &[String]) -> String {
    if issuers.is_empty() {
        return String::new();
    }
    let names: Vec<String> = issuers.iter().map(|i| format!("{i:?}")).collect();
    format!(
        "; DEVELOPMENT ONLY: issuer(s) {} fetch signing keys over plain HTTP (allowInsecureHttp: true), \
         so anyone on the network path could inject keys",
        names.join(", ")
    )
}

fn documents_condition(observation: &Observation<'_>) -> Computed {
    if observation.missing_config_maps.is_empty() {
        return Computed {
            type_: conditions::DOCUMENTS_READY,
            ok: true,
            reason: reason::AS_EXPECTED,
            message: "every document collection's source exists".into(),
        };
    }
    let missing: Vec<String> = observation
        .missing_config_maps
        .iter()
        .map(|m| {
            format!(
                "ConfigMap {}/{} (named in {})",
                observation.namespace, m.name, m.field_path
            )
        })
        .collect();
    Computed {
        type_: conditions::DOCUMENTS_READY,
        ok: false,
        reason: reason::CONFIG_MAP_NOT_FOUND,
        message: format!(
            "{} not found; create it in namespace {} (the pods start once it exists)",
            missing.join(", "),
            observation.namespace
        ),
    }
}

fn secrets_condition(observation: &Observation<'_>) -> Computed {
    let ns = observation.namespace;
    if observation.external_secrets == ExternalSecrets::NotInstalled {
        return Computed {
            type_: conditions::SECRETS_READY,
            ok: false,
            reason: reason::EXTERNAL_SECRETS_NOT_INSTALLED,
            message: "spec.auth syncs Secrets from an external store, but the ExternalSecret CRD \
                      (externalsecrets.external-secrets.io/v1) is not installed in this cluster: install External \
                      Secrets Operator (https://external-secrets.io), or use secretKeyRef with an existing Secret; \
                      everything else was applied"
                .into(),
        };
    }
    let plain: Vec<&Missing> = observation.missing_secrets.iter().filter(|m| !m.external).collect();
    if !plain.is_empty() {
        let names: Vec<String> = plain
            .iter()
            .map(|m| format!("Secret {ns}/{} (named in {})", m.name, m.field_path))
            .collect();
        return Computed {
            type_: conditions::SECRETS_READY,
            ok: false,
            reason: reason::SECRET_NOT_FOUND,
            message: format!("{} not found; create it in namespace {ns}", names.join(", ")),
        };
    }
    let unsynced: Vec<String> = observation
        .synced
        .iter()
        .filter_map(|state| {
            let present = !observation
                .missing_secrets
                .iter()
                .any(|m| m.external && m.name == state.name);
            unsynced_message(ns, state, present)
        })
        .collect();
    if !unsynced.is_empty() {
        // A store that refuses needs someone to act; a sync that has not happened yet, time.
        let refused = observation.synced.iter().any(|s| matches!(s.sync, Sync::Failed { .. }));
        return Computed {
            type_: conditions::SECRETS_READY,
            ok: false,
            reason: if refused {
                reason::EXTERNAL_SECRET_SYNC_FAILED
            } else {
                reason::EXTERNAL_SECRET_NOT_READY
            },
            message: unsynced.join("; "),
        };
    }
    Computed {
        type_: conditions::SECRETS_READY,
        ok: true,
        reason: reason::AS_EXPECTED,
        message: "every Secret the server reads exists".into(),
    }
}

/// Why the Secret of one ExternalSecret is not ready, or `None` when it is: External Secrets
/// Operator reports it synced (`Ready=True`) and the Secret exists.
fn unsynced_message(ns: &str, state: &SyncState, secret_present: bool) -> Option<String> {
    let name = &state.name;
    let describe = format!("see `kubectl describe externalsecret -n {ns} {name}`");
    match (&state.sync, secret_present) {
        (Sync::Synced, true) => None,
        (Sync::Synced, false) => Some(format!(
            "ExternalSecret {ns}/{name} is Ready but Secret {ns}/{name} does not exist; External Secrets \
             Operator writes it again on its next refresh ({describe})"
        )),
        (Sync::Pending, present) => {
            let secret = if present {
                String::new()
            } else {
                format!(" and Secret {ns}/{name} does not exist")
            };
            Some(format!(
                "ExternalSecret {ns}/{name} has not been synced yet{secret}; is External Secrets Operator running? \
                 ({describe})"
            ))
        }
        (Sync::Failed { reason, message }, present) => Some(format!(
            "ExternalSecret {ns}/{name} is not Ready ({reason}{}); {} ({describe})",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            },
            if present {
                "the pods keep the value synced last"
            } else {
                "the pods wait for the Secret it writes"
            }
        )),
    }
}

/// Pods of the Deployment as its status reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pods {
    desired: i32,
    replicas: i32,
    ready: i32,
    available: i32,
    updated: i32,
    current: bool,
}

fn pods(deployment: &Deployment) -> Pods {
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or_default();
    Pods {
        desired,
        replicas: status.replicas.unwrap_or_default(),
        ready: status.ready_replicas.unwrap_or_default(),
        available: status.available_replicas.unwrap_or_default(),
        updated: status.updated_replicas.unwrap_or_default(),
        current: status.observed_generation.unwrap_or_default() >= generation,
    }
}

fn ready_condition(others: &[&Computed], pods: Option<&Pods>, previous_ready: Option<i32>) -> Computed {
    if let Some(failing) = others.iter().find(|c| !c.ok) {
        return Computed {
            type_: conditions::READY,
            ok: false,
            reason: failing.reason,
            message: format!("{} is False: {}", failing.type_, failing.message),
        };
    }
    let Some(pods) = pods else {
        return Computed {
            type_: conditions::READY,
            ok: previous_ready.is_some_and(|r| r > 0),
            reason: reason::PODS_NOT_READY,
            message: "the Deployment was not applied in this reconcile".into(),
        };
    };
    let all_ready =
        pods.current && pods.updated >= pods.desired && pods.available >= pods.desired && pods.ready >= pods.desired;
    if all_ready {
        Computed {
            type_: conditions::READY,
            ok: true,
            reason: reason::AS_EXPECTED,
            message: format!("{} of {} pods ready", pods.ready, pods.desired),
        }
    } else {
        Computed {
            type_: conditions::READY,
            ok: false,
            reason: reason::PODS_NOT_READY,
            message: format!(
                "{} of {} pods ready ({} updated, {} available); see `kubectl get pods` for the pods of the Deployment",
                pods.ready, pods.desired, pods.updated, pods.available
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::controller::rollout::{Report, tally};
    use palisade_crds::mcp_server::PolicyRollout;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn deployment(desired: i32, ready: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                replicas: Some(desired),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                updated_replicas: Some(desired),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    /// What `hashes.len()` ready pods report, one hash each, against `desired`.
    fn pods_on(desired: &str, hashes: &[&str]) -> Rollout {
        let reports: Vec<Report> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| Report {
                pod: format!("s-{i}"),
                hash: Ok((*h).to_owned()),
            })
            .collect();
        tally(desired, &reports)
    }

    /// An observation whose ready pods (as many as the Deployment's) all serve a valid policy.
    fn observation<'a>(policy: PolicyOutcome, deployment: Option<&'a Deployment>) -> Observation<'a> {
        let rollout = match (&policy, deployment) {
            (PolicyOutcome::Valid { hash, .. }, Some(d)) => {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or_default();
                let hashes = vec![hash.as_str(); usize::try_from(ready).unwrap_or_default()];
                Some(pods_on(hash, &hashes))
            }
            _ => None,
        };
        Observation {
            generation: Some(2),
            namespace: "ns",
            endpoint: "http://s.ns.svc.cluster.local/mcp".into(),
            policy,
            missing_config_maps: &[],
            missing_secrets: &[],
            external_secrets: ExternalSecrets::NotNeeded,
            synced: &[],
            deployment,
            apply_error: None,
            rollout,
            inventory: None,
            pod_security: None,
        }
    }

    #[test]
    fn a_proxy_s_inventory_fills_status_upstream_and_tools_pinned_and_is_kept_when_no_pod_answers() {
        use palisade_crds::inventory::{PinState, UpstreamInventory, UpstreamToolState};
        let deployment = deployment(1, 1);
        let reported = UpstreamInventory {
            reported_by: Some("files-0".into()),
            policy_hash: "sha256:p".into(),
            tools: vec![UpstreamToolState {
                name: "read_file".into(),
                sha256: format!("sha256:{}", "b".repeat(64)),
                pin: PinState::Pinned,
                pinned_sha256: None,
                served: true,
                reachable: true,
            }],
            reachable_tools: 1,
            ..UpstreamInventory::default()
        };
        let mut proxy = observation(valid("sha256:p"), Some(&deployment));
        proxy.inventory = Some(Inventory::Reported(reported.clone()));
        let first = server_status(None, &proxy, &time(1));
        assert_eq!(first.upstream.as_ref(), Some(&reported));
        let pinned = condition(&first.conditions, conditions::TOOLS_PINNED).expect("ToolsPinned");
        assert_eq!(
            (pinned.status.as_str(), pinned.reason.as_str()),
            ("True", reason::AS_EXPECTED)
        );

        proxy.inventory = Some(Inventory::Unanswered("files-0: cannot connect".into()));
        let next = server_status(Some(&first), &proxy, &time(2));
        assert_eq!(next.upstream.as_ref(), Some(&reported), "kept: nothing new was learned");
        let pinned = condition(&next.conditions, conditions::TOOLS_PINNED).unwrap();
        assert_eq!(
            (pinned.status.as_str(), pinned.reason.as_str()),
            ("False", reason::NO_INVENTORY)
        );
        assert!(
            pinned.message.ends_with("files-0: cannot connect"),
            "{}",
            pinned.message
        );

        proxy.pod_security = Some(Err("spec.upstream.container.runAsUser is 0: ...".into()));
        let root = server_status(Some(&next), &proxy, &time(3));
        let restricted = condition(&root.conditions, conditions::POD_SECURITY_RESTRICTED).unwrap();
        assert_eq!(
            (restricted.status.as_str(), restricted.reason.as_str()),
            ("False", reason::UPSTREAM_RUNS_AS_ROOT)
        );

        let document_server = server_status(
            Some(&next),
            &observation(valid("sha256:p"), Some(&deployment)),
            &time(3),
        );
        assert_eq!(document_server.upstream, None);
        assert!(condition(&document_server.conditions, conditions::TOOLS_PINNED).is_none());
        assert!(condition(&document_server.conditions, conditions::POD_SECURITY_RESTRICTED).is_none());
    }

    #[test]
    fn a_policy_is_in_force_only_when_every_ready_pod_serves_it() {
        let deployment = deployment(2, 2);
        let old = server_status(None, &observation(valid("sha256:old"), Some(&deployment)), &time(1));
        let rolled = condition(&old.conditions, conditions::POLICY_ROLLED_OUT).unwrap();
        assert_eq!((rolled.status.as_str(), rolled.reason.as_str()), ("True", "AsExpected"));
        assert_eq!(rolled.message, "all 2 ready pods serve policy sha256:old");

        // The new policy's ConfigMap is applied; one pod reloaded it, the other has not yet.
        let mut changing = observation(valid("sha256:new"), Some(&deployment));
        changing.rollout = Some(pods_on("sha256:new", &["sha256:new", "sha256:old"]));
        let halfway = server_status(Some(&old), &changing, &time(2));
        assert_eq!(
            halfway.policy_hash.as_deref(),
            Some("sha256:old"),
            "still the one every pod serves"
        );
        assert_eq!(
            halfway.policy_rollout,
            [
                PolicyRollout {
                    hash: "sha256:new".into(),
                    pods: 1
                },
                PolicyRollout {
                    hash: "sha256:old".into(),
                    pods: 1
                }
            ]
        );
        let rolling = condition(&halfway.conditions, conditions::POLICY_ROLLED_OUT).unwrap();
        assert_eq!(
            (rolling.status.as_str(), rolling.reason.as_str()),
            ("False", "RollingOut")
        );
        assert!(
            rolling
                .message
                .starts_with("1 of 2 ready pods serve policy sha256:new; 1 on sha256:old."),
            "{}",
            rolling.message
        );
        assert!(
            super::super::events::changes(Some(&old), &halfway).is_empty(),
            "no PolicyRolledOut event before the pods serve it"
        );

        let done = server_status(
            Some(&halfway),
            &observation(valid("sha256:new"), Some(&deployment)),
            &time(3),
        );
        assert_eq!(done.policy_hash.as_deref(), Some("sha256:new"));
        let rolled = condition(&done.conditions, conditions::POLICY_ROLLED_OUT).unwrap();
        assert_eq!(
            (rolled.status.as_str(), rolled.last_transition_time.clone()),
            ("True", time(3))
        );
        let events = super::super::events::changes(Some(&halfway), &done);
        assert!(
            events.iter().any(|e| e.reason == "PolicyRolledOut" && !e.warning),
            "{events:?}"
        );
    }

    #[test]
    fn no_ready_pod_and_a_silent_pod_are_not_rolled_out() {
        let none_ready = deployment(1, 0);
        let status = server_status(None, &observation(valid("sha256:a"), Some(&none_ready)), &time(1));
        let rolled = condition(&status.conditions, conditions::POLICY_ROLLED_OUT).unwrap();
        assert_eq!(
            (rolled.status.as_str(), rolled.reason.as_str()),
            ("False", "NoReadyPods")
        );
        assert_eq!(status.policy_hash, None);

        let ready = deployment(2, 2);
        let mut silent = observation(valid("sha256:a"), Some(&ready));
        silent.rollout = Some(tally(
            "sha256:a",
            &[
                Report {
                    pod: "s-0".into(),
                    hash: Ok("sha256:a".into()),
                },
                Report {
                    pod: "s-1".into(),
                    hash: Err("no answer to GET /ready within 2s".into()),
                },
            ],
        ));
        let status = server_status(None, &silent, &time(1));
        let rolled = condition(&status.conditions, conditions::POLICY_ROLLED_OUT).unwrap();
        assert_eq!(rolled.reason, "RollingOut");
        assert!(
            rolled
                .message
                .contains("1 on unknown (no hash from s-1: no answer to GET /ready within 2s)"),
            "{}",
            rolled.message
        );
        assert_eq!(status.policy_hash, None);
    }

    fn valid(hash: &str) -> PolicyOutcome {
        PolicyOutcome::Valid {
            hash: hash.into(),
            bound: vec!["p".into()],
            reachable: Some(1),
            unreachable: Vec::new(),
            insecure_issuers: Vec::new(),
        }
    }

    #[test]
    fn policy_valid_names_the_issuers_that_fetch_keys_over_plain_http() {
        let outcome = PolicyOutcome::Valid {
            hash: "sha256:x".into(),
            bound: vec!["p".into()],
            reachable: Some(1),
            unreachable: Vec::new(),
            insecure_issuers: vec!["http://127.0.0.1:8080".into()],
        };
        let computed = policy_condition(&outcome, None);
        assert!(computed.ok);
        assert_eq!(
            computed.message,
            "policy sha256:x compiled from p and in force; DEVELOPMENT ONLY: issuer(s) \"http://127.0.0.1:8080\" \
             fetch signing keys over plain HTTP (allowInsecureHttp: true), so anyone on the network path could inject keys"
        );
        assert_eq!(
            policy_condition(&valid("sha256:x"), None).message,
            "policy sha256:x compiled from p and in force"
        );
    }

    #[test]
    fn a_refused_apply_is_ready_false_and_keeps_the_policy_in_force() {
        let now = Time(Timestamp::from_second(100).unwrap());
        let deployment = deployment(1, 1);
        let before = server_status(None, &observation(valid("sha256:old"), Some(&deployment)), &now);
        let mut refused = observation(valid("sha256:new"), None);
        refused.apply_error = Some(
            "cannot apply Deployment ns/s: admission webhook \"policy.example.com\" denied the request: no".into(),
        );
        let after = server_status(Some(&before), &refused, &now);
        let ready = condition(&after.conditions, conditions::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::APPLY_FAILED)
        );
        assert_eq!(
            ready.message,
            "the API server refused a child: cannot apply Deployment ns/s: admission webhook \"policy.example.com\" denied the request: no"
        );
        assert_eq!(after.policy_hash.as_deref(), Some("sha256:old"), "not rolled out");
        let events = super::super::events::changes(Some(&before), &after);
        assert!(
            events.iter().any(|e| e.warning && e.reason == reason::APPLY_FAILED),
            "{events:?}"
        );
    }

    #[test]
    fn ready_when_every_pod_is_and_unchanged_status_is_equal() {
        let deployment = deployment(2, 2);
        let first = server_status(None, &observation(valid("sha256:a"), Some(&deployment)), &time(1));
        let ready = condition(&first.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AsExpected"));
        assert_eq!((first.replicas, first.ready_replicas), (Some(2), Some(2)));
        assert_eq!(first.policy_hash.as_deref(), Some("sha256:a"));
        assert_eq!(first.observed_generation, Some(2));
        let second = server_status(
            Some(&first),
            &observation(valid("sha256:a"), Some(&deployment)),
            &time(9),
        );
        assert_eq!(first, second, "the transition time is kept while nothing changes");
    }

    #[test]
    fn an_invalid_policy_keeps_the_last_good_one_in_the_status() {
        let deployment = deployment(1, 1);
        let good = server_status(None, &observation(valid("sha256:good"), Some(&deployment)), &time(1));
        let invalid = PolicyOutcome::Invalid {
            reason: reason::POLICY_INVALID,
            message: "McpAccessPolicy ns/p: spec.roles[0].scopes[0]: bad".into(),
        };
        let bad = server_status(Some(&good), &observation(invalid, None), &time(5));
        assert_eq!(bad.policy_hash.as_deref(), Some("sha256:good"));
        assert_eq!(bad.bound_policies, ["p"]);
        let policy = condition(&bad.conditions, conditions::POLICY_VALID).unwrap();
        assert_eq!(
            (policy.status.as_str(), policy.reason.as_str()),
            ("False", "PolicyInvalid")
        );
        assert!(policy.message.contains("spec.roles[0].scopes[0]"), "{}", policy.message);
        assert!(
            policy.message.contains("sha256:good) stays in force"),
            "{}",
            policy.message
        );
        assert_eq!(policy.last_transition_time, time(5));
        let ready = condition(&bad.conditions, conditions::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PolicyInvalid")
        );
    }

    #[test]
    fn missing_sources_and_uninstalled_external_secrets_say_what_to_do() {
        let deployment = deployment(1, 0);
        let missing_cm = [Missing {
            name: "docs".into(),
            field_path: "spec.documents[0].configMapRef.name".into(),
            external: false,
        }];
        let mut obs = observation(valid("sha256:a"), Some(&deployment));
        obs.missing_config_maps = &missing_cm;
        obs.external_secrets = ExternalSecrets::NotInstalled;
        let status = server_status(None, &obs, &time(1));
        let docs = condition(&status.conditions, conditions::DOCUMENTS_READY).unwrap();
        assert_eq!(docs.reason, "ConfigMapNotFound");
        assert!(docs.message.contains("ConfigMap ns/docs"), "{}", docs.message);
        let secrets = condition(&status.conditions, conditions::SECRETS_READY).unwrap();
        assert_eq!(
            (secrets.status.as_str(), secrets.reason.as_str()),
            ("False", "ExternalSecretsNotInstalled")
        );
        assert!(secrets.message.contains("install External Secrets Operator"));
        let ready = condition(&status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.status, "False");
    }

    fn secrets_ready(synced: &[SyncState], missing: &[Missing]) -> (String, String, String) {
        let deployment = deployment(1, 1);
        let mut obs = observation(valid("sha256:a"), Some(&deployment));
        obs.external_secrets = ExternalSecrets::Applied;
        obs.synced = synced;
        obs.missing_secrets = missing;
        let status = server_status(None, &obs, &time(1));
        let c = condition(&status.conditions, conditions::SECRETS_READY).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn state(sync: Sync) -> SyncState {
        SyncState {
            name: "jwt".into(),
            sync,
        }
    }

    #[test]
    fn secrets_ready_follows_the_external_secret_ready_condition_and_the_secret() {
        let missing = [Missing {
            name: "jwt".into(),
            field_path: "spec.auth.issuers[0].hmacKey".into(),
            external: true,
        }];
        assert_eq!(
            secrets_ready(&[state(Sync::Synced)], &[]),
            (
                "True".into(),
                "AsExpected".into(),
                "every Secret the server reads exists".into()
            )
        );
        assert_eq!(
            secrets_ready(&[state(Sync::Synced)], &missing),
            (
                "False".into(),
                "ExternalSecretNotReady".into(),
                "ExternalSecret ns/jwt is Ready but Secret ns/jwt does not exist; External Secrets Operator writes \
                 it again on its next refresh (see `kubectl describe externalsecret -n ns jwt`)"
                    .into()
            )
        );
        assert_eq!(
            secrets_ready(&[state(Sync::Pending)], &missing).2,
            "ExternalSecret ns/jwt has not been synced yet and Secret ns/jwt does not exist; is External Secrets \
             Operator running? (see `kubectl describe externalsecret -n ns jwt`)"
        );
        assert_eq!(
            secrets_ready(&[state(Sync::Pending)], &[]).2,
            "ExternalSecret ns/jwt has not been synced yet; is External Secrets Operator running? (see `kubectl \
             describe externalsecret -n ns jwt`)"
        );
        let failed = state(Sync::Failed {
            reason: "SecretSyncedError".into(),
            message: "could not get secret data from provider".into(),
        });
        assert_eq!(
            secrets_ready(std::slice::from_ref(&failed), &[]),
            (
                "False".into(),
                "ExternalSecretSyncFailed".into(),
                "ExternalSecret ns/jwt is not Ready (SecretSyncedError: could not get secret data from provider); \
                 the pods keep the value synced last (see `kubectl describe externalsecret -n ns jwt`)"
                    .into()
            )
        );
        assert_eq!(
            secrets_ready(&[failed], &missing).2,
            "ExternalSecret ns/jwt is not Ready (SecretSyncedError: could not get secret data from provider); \
             the pods wait for the Secret it writes (see `kubectl describe externalsecret -n ns jwt`)"
        );
    }

    #[test]
    fn pods_not_ready_is_reported_with_counts() {
        let deployment = deployment(3, 1);
        let status = server_status(None, &observation(valid("sha256:a"), Some(&deployment)), &time(1));
        let ready = condition(&status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.reason, "PodsNotReady");
        assert!(ready.message.starts_with("1 of 3 pods ready"), "{}", ready.message);
    }
}
