//! Which McpAccessPolicies bind an McpServer. The one binding rule of Palisade: the operator's
//! controller (on its cache), `palisade-operator render` and `palisade-server policy check` /
//! `policy compile` (on files) all call [`bound_policies`], so a policy binds the same servers
//! wherever it is read.
//!
//! A policy binds a server when both are in the same namespace and either one of its `targetRefs`
//! names the server, or its `targetSelector` matches the server's labels. A `targetRef` into
//! another namespace never binds (Kubernetes API conventions: references do not cross namespaces
//! unless a grant allows it) and is reported as refused, as is a selector that cannot be parsed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::ResourceExt;

use crate::problem::Problem;
use crate::{McpAccessPolicy, McpServer};

/// The result of [`bound_policies`].
#[derive(Debug, Default)]
pub struct Bound<'a> {
    /// The policies that bind the server, sorted by name.
    pub policies: Vec<&'a McpAccessPolicy>,
    /// References to the server that were refused: cross-namespace `targetRefs` and selectors
    /// that cannot be evaluated.
    pub refused: Vec<Problem>,
}

/// The policies among `policies` that bind `server`.
///
/// ```
/// use palisade_crds::{McpAccessPolicy, McpServer, bound_policies};
///
/// let server: McpServer = yaml_serde::from_str(
///     "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\n\
///      metadata: {name: docs, namespace: team-a, labels: {team: docs}}\n\
///      spec: {auth: {allowAnonymous: true}}\n",
/// )
/// .unwrap();
/// let policy = |name: &str, namespace: &str, spec: &str| -> McpAccessPolicy {
///     yaml_serde::from_str(&format!(
///         "apiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\n\
///          metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
///     ))
///     .unwrap()
/// };
/// let policies = [
///     policy("by-name", "team-a", "{targetRefs: [{name: docs}]}"),
///     policy("by-label", "team-a", "{targetSelector: {matchLabels: {team: docs}}}"),
///     policy("elsewhere", "team-b", "{targetRefs: [{name: docs, namespace: team-a}]}"),
/// ];
/// let bound = bound_policies(&server, &policies);
/// let names: Vec<&str> = bound.policies.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect();
/// assert_eq!(names, ["by-label", "by-name"]);
/// // A reference from another namespace never binds; it is reported.
/// assert_eq!(bound.refused[0].path, "spec.targetRefs[0].namespace");
/// ```
pub fn bound_policies<'a>(server: &McpServer, policies: impl IntoIterator<Item = &'a McpAccessPolicy>) -> Bound<'a> {
    let name = server.name_any();
    let namespace = server.namespace().unwrap_or_default();
    let mut bound = Bound::default();
    for policy in policies {
        let policy_namespace = policy.namespace().unwrap_or_default();
        let object = format!("McpAccessPolicy {policy_namespace}/{}", policy.name_any());
        let mut binds = false;
        for (i, target) in policy.spec.target_refs.iter().enumerate() {
            if target.name != name {
                continue;
            }
            let target_namespace = target.namespace.as_deref().unwrap_or(&policy_namespace);
            if target_namespace != namespace {
                continue;
            }
            if policy_namespace == namespace {
                binds = true;
            } else {
                bound.refused.push(Problem::new(
                    Some(&object),
                    format!("spec.targetRefs[{i}].namespace"),
                    format!(
                        "refers to McpServer {namespace}/{name} in another namespace (CrossNamespaceRef); \
                         a policy binds only servers in its own namespace"
                    ),
                ));
            }
        }
        if policy_namespace == namespace
            && let Some(selector) = &policy.spec.target_selector
        {
            match selector_matches(selector, server.labels()) {
                Ok(matches) => binds |= matches,
                Err(message) => bound
                    .refused
                    .push(Problem::new(Some(&object), "spec.targetSelector", message)),
            }
        }
        if binds {
            bound.policies.push(policy);
        }
    }
    bound.policies.sort_by_key(|p| p.name_any());
    bound.policies.dedup_by_key(|p| p.name_any());
    bound
}

/// Whether a label selector matches `labels`, with the semantics of Kubernetes'
/// `LabelSelectorAsSelector`: every `matchLabels` pair and every `matchExpressions` requirement
/// must hold, and an empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let mut expressions_match = true;
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        expressions_match &=
            requirement_matches(requirement, labels).map_err(|message| format!("matchExpressions[{i}]: {message}"))?;
    }
    Ok(labels_match && expressions_match)
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let values = requirement.values.as_deref().unwrap_or_default();
    let value = labels.get(&requirement.key);
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            Err(format!("operator {} needs at least one value", requirement.operator))
        }
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Err(format!("operator {} takes no values", requirement.operator))
        }
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(value.is_none_or(|v| !values.contains(v))),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        other => Err(format!(
            "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{policy, server};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let team_a = labels(&[("team", "a"), ("tier", "gold")]);
        let cases = [
            ("{}", true),
            ("matchLabels: {team: a}", true),
            ("matchLabels: {team: b}", false),
            ("matchLabels: {team: a, tier: gold}", true),
            ("matchExpressions: [{key: team, operator: In, values: [a, b]}]", true),
            ("matchExpressions: [{key: team, operator: In, values: [b]}]", false),
            ("matchExpressions: [{key: team, operator: NotIn, values: [b]}]", true),
            ("matchExpressions: [{key: missing, operator: NotIn, values: [b]}]", true),
            ("matchExpressions: [{key: tier, operator: Exists}]", true),
            ("matchExpressions: [{key: missing, operator: Exists}]", false),
            ("matchExpressions: [{key: missing, operator: DoesNotExist}]", true),
            (
                "{matchLabels: {team: a}, matchExpressions: [{key: tier, operator: DoesNotExist}]}",
                false,
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(selector_matches(&selector(yaml), &team_a), Ok(expected), "{yaml}");
        }
        for bad in [
            "matchExpressions: [{key: team, operator: In}]",
            "matchExpressions: [{key: team, operator: Exists, values: [a]}]",
            "matchExpressions: [{key: team, operator: Equals, values: [a]}]",
        ] {
            assert!(selector_matches(&selector(bad), &team_a).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_bind_by_name_or_selector_in_their_own_namespace_only() {
        let server =
            server("metadata: {name: s, namespace: a, labels: {team: x}}\nspec: {auth: {allowAnonymous: true}}");
        let by_name = policy("metadata: {name: by-name, namespace: a}\nspec: {targetRefs: [{name: s}]}");
        let explicit_ns =
            policy("metadata: {name: explicit, namespace: a}\nspec: {targetRefs: [{name: s, namespace: a}]}");
        let by_label =
            policy("metadata: {name: by-label, namespace: a}\nspec: {targetSelector: {matchLabels: {team: x}}}");
        let other_server = policy("metadata: {name: other, namespace: a}\nspec: {targetRefs: [{name: t}]}");
        let other_label =
            policy("metadata: {name: other-label, namespace: a}\nspec: {targetSelector: {matchLabels: {team: y}}}");
        let same_name_elsewhere = policy("metadata: {name: elsewhere, namespace: b}\nspec: {targetRefs: [{name: s}]}");
        let label_elsewhere = policy("metadata: {name: label-elsewhere, namespace: b}\nspec: {targetSelector: {}}");
        let cross = policy("metadata: {name: cross, namespace: b}\nspec: {targetRefs: [{name: s, namespace: a}]}");
        let out_of_ns = policy("metadata: {name: out, namespace: a}\nspec: {targetRefs: [{name: s, namespace: b}]}");
        let all = [
            &by_name,
            &explicit_ns,
            &by_label,
            &other_server,
            &other_label,
            &same_name_elsewhere,
            &label_elsewhere,
            &cross,
            &out_of_ns,
        ];
        let bound = bound_policies(&server, all);
        let names: Vec<String> = bound.policies.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["by-label", "by-name", "explicit"]);
        assert_eq!(bound.refused.len(), 1);
        assert_eq!(bound.refused[0].object.as_deref(), Some("McpAccessPolicy b/cross"));
        assert_eq!(bound.refused[0].path, "spec.targetRefs[0].namespace");
    }

    #[test]
    fn cross_namespace_refs_and_bad_selectors_are_refused_with_a_reason() {
        let server = server("metadata: {name: s, namespace: a}\nspec: {auth: {allowAnonymous: true}}");
        let cross = policy("metadata: {name: cross, namespace: b}\nspec: {targetRefs: [{name: s, namespace: a}]}");
        let bad_selector = policy(
            "metadata: {name: bad, namespace: a}\nspec: {targetSelector: {matchExpressions: [{key: team, operator: In}]}}",
        );
        let bound = bound_policies(&server, [&cross, &bad_selector]);
        assert!(bound.policies.is_empty());
        let refused: Vec<String> = bound.refused.iter().map(ToString::to_string).collect();
        assert_eq!(
            refused,
            [
                "McpAccessPolicy b/cross: spec.targetRefs[0].namespace: refers to McpServer a/s in another namespace \
                 (CrossNamespaceRef); a policy binds only servers in its own namespace",
                "McpAccessPolicy a/bad: spec.targetSelector: matchExpressions[0]: operator In needs at least one value",
            ]
        );
    }

    #[test]
    fn a_selector_bound_policy_binds_without_any_target_ref() {
        let labelled =
            server("metadata: {name: s, namespace: a, labels: {tier: gold}}\nspec: {auth: {allowAnonymous: true}}");
        let unlabelled = server("metadata: {name: t, namespace: a}\nspec: {auth: {allowAnonymous: true}}");
        let gold = policy(
            "metadata: {name: gold, namespace: a}\nspec: {targetSelector: {matchExpressions: [{key: tier, operator: In, values: [gold]}]}}",
        );
        assert_eq!(bound_policies(&labelled, [&gold]).policies.len(), 1);
        assert!(bound_policies(&unlabelled, [&gold]).policies.is_empty());
    }
}
