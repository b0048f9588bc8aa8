//! The inventory of an upstream's tools under a policy (proxy mode): which tools the upstream
//! offers, whether each matches its pin (tool pinning against "rug pulls", an upstream that
//! changes a reviewed tool's text or schema), which are served, which a role can reach, which
//! pins name a tool the upstream no longer offers and which rules match no tool it offers.
//!
//! [`take_inventory`] is the one function that decides what is served: the server calls it on
//! every new tool list or policy and lists and calls only the tools it serves; it reports the
//! result on `GET /inventory` of its metrics port, and the operator copies it into
//! `status.upstream` and derives condition `ToolsPinned` from it.
//!
//! ```
//! use palisade_crds::{Policy, PolicyDocument};
//! use palisade_crds::inventory::{PinState, take_inventory};
//!
//! let pinned = format!("sha256:{}", "a".repeat(64));
//! let document = PolicyDocument::from_yaml(&format!(
//!     r#"
//! apiVersion: palisade.dev/v1alpha1
//! kind: PolicyDocument
//! metadata: {{}}
//! authentication: {{resource: "http://files.team-a.svc.cluster.local/mcp", allowAnonymous: true}}
//! rules: [{{match: "*", requiredScopes: []}}, {{match: delete_all, requiredScopes: []}}]
//! upstream:
//!   pinning: Enforce
//!   unpinned: Allow
//!   tools: [{{name: read_file, sha256: "{pinned}"}}, {{name: gone, sha256: "{pinned}"}}]
//! "#
//! ))
//! .unwrap();
//! let policy = Policy::new(document).unwrap();
//! let changed = format!("sha256:{}", "b".repeat(64));
//! let offered = [("read_file".to_owned(), changed.clone()), ("list".to_owned(), changed)];
//! let (inventory, catalog) = take_inventory(&policy, &offered, 0);
//! // read_file's definition is not the pinned one: withheld.
//! assert_eq!(inventory.tools[1].name, "read_file");
//! assert_eq!(inventory.tools[1].pin, PinState::Changed);
//! assert!(!inventory.tools[1].served);
//! // list has no pin: served (unpinned: Allow).
//! assert_eq!((inventory.tools[0].pin, inventory.tools[0].served), (PinState::Unpinned, true));
//! assert_eq!(catalog.names(), ["list"]);
//! assert_eq!(inventory.missing_tools, ["gone"]);
//! assert_eq!(inventory.unmatched_rules, ["delete_all"]);
//! ```

use std::collections::{BTreeSet, HashMap};

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::document::{PinningMode, RuleKind, UnpinnedTools, UpstreamTools};
use crate::evaluator::Policy;
use crate::tool_match::ToolPattern;

/// The most tools an inventory lists (and a proxying server serves): beyond it the upstream's
/// tools are not served.
pub const MAX_TOOLS: usize = 1000;

/// What an upstream offers and what of it is served, under one policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamInventory {
    /// The ready pod that reported this inventory (the first by name that answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
    /// `sha256:<hex>` of the policy the pod decided with: pins changed since are in force once
    /// the pod reports the new policy (`status.policyHash`).
    pub policy_hash: String,
    /// The upstream's tools, sorted by name. Keyed by `name`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tools: Vec<UpstreamToolState>,
    /// Tools the upstream offers that are never served: a name no rule can govern (outside
    /// `[A-Za-z0-9_.-]{1,128}`), a name listed twice, or beyond the 1,000th.
    #[serde(default)]
    pub ungovernable_tools: i32,
    /// Served tools that at least one role (or no scope at all) can reach.
    #[serde(default)]
    pub reachable_tools: i32,
    /// Tools of `spec.upstream.tools` with a `sha256` that the upstream does not offer, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_tools: Vec<String>,
    /// `match` of the tool rules that match no tool the upstream offers, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_rules: Vec<String>,
}

/// One tool the upstream offers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamToolState {
    /// The tool's name.
    pub name: String,
    /// The upstream's definition now: `sha256:` and the hex SHA-256 of its name, title,
    /// description, input schema and annotations as canonical JSON. Copy it into
    /// `spec.upstream.tools[].sha256` to accept the definition.
    pub sha256: String,
    /// `Pinned`: the definition is the accepted one. `Changed`: it differs from its pin.
    /// `Unpinned`: the tool has no pin.
    pub pin: PinState,
    /// The pin the definition differs from (`Changed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_sha256: Option<String>,
    /// Listed and callable (for the callers the policy allows): `false` for a tool withheld by
    /// `spec.upstream.pinning`.
    pub served: bool,
    /// Served and reachable by at least one role (or needing no scope).
    pub reachable: bool,
}

/// How a tool's definition compares with its pin.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinState {
    /// The definition is the pinned one.
    Pinned,
    /// The definition differs from its pin.
    Changed,
    /// The tool has no pin.
    Unpinned,
}

impl PinState {
    /// `pinned`, `changed` or `unpinned`, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Changed => "changed",
            Self::Unpinned => "unpinned",
        }
    }
}

/// The inventory of `offered` (governable, distinct names with their definitions' hashes, at
/// most [`MAX_TOOLS`]; `ungovernable` others were dropped by the caller) under `policy`, and the
/// catalog of the tools it serves (pure).
pub fn take_inventory(
    policy: &Policy,
    offered: &[(String, String)],
    ungovernable: usize,
) -> (UpstreamInventory, Catalog) {
    let default = UpstreamTools::default();
    let pins = policy.document().upstream.as_ref().unwrap_or(&default);
    let by_name: HashMap<&str, Option<&str>> = pins
        .tools
        .iter()
        .map(|p| (p.name.as_str(), p.sha256.as_deref()))
        .collect();
    let mut tools: Vec<UpstreamToolState> = offered
        .iter()
        .map(|(name, sha256)| {
            let (pin, pinned_sha256) = match by_name.get(name.as_str()).copied().flatten() {
                Some(pinned) if pinned == sha256 => (PinState::Pinned, None),
                Some(pinned) => (PinState::Changed, Some(pinned.to_owned())),
                None => (PinState::Unpinned, None),
            };
            let served = match pin {
                PinState::Pinned => true,
                PinState::Changed => pins.pinning == PinningMode::Report,
                PinState::Unpinned => pins.unpinned == UnpinnedTools::Allow,
            };
            UpstreamToolState {
                name: name.clone(),
                sha256: sha256.clone(),
                pin,
                pinned_sha256,
                served,
                reachable: false,
            }
        })
        .collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let catalog = policy.catalog(tools.iter().filter(|t| t.served).map(|t| t.name.clone()));
    let (reachable, _) = catalog.reachability(policy);
    let reachable: BTreeSet<&str> = reachable.into_iter().collect();
    for tool in &mut tools {
        tool.reachable = reachable.contains(tool.name.as_str());
    }
    let offered_names: BTreeSet<&str> = offered.iter().map(|(name, _)| name.as_str()).collect();
    let missing_tools = pins
        .tools
        .iter()
        .filter(|p| p.sha256.is_some() && !offered_names.contains(p.name.as_str()))
        .map(|p| p.name.clone())
        .collect();
    let unmatched_rules = policy
        .document()
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Tool)
        .filter(|r| {
            ToolPattern::parse(&r.match_).is_ok_and(|pattern| !offered_names.iter().any(|n| pattern.matches(n)))
        })
        .map(|r| r.match_.clone())
        .collect();
    let inventory = UpstreamInventory {
        reported_by: None,
        policy_hash: policy.hash().to_owned(),
        ungovernable_tools: i32::try_from(ungovernable).unwrap_or(i32::MAX),
        reachable_tools: i32::try_from(reachable.len()).unwrap_or(i32::MAX),
        tools,
        missing_tools,
        unmatched_rules,
    };
    (inventory, catalog)
}
