//! A proxy's upstream inventory: what the upstream offers, as a ready pod of the server lists it
//! on `GET /inventory` of its metrics port, copied into `status.upstream` with condition
//! `ToolsPinned`.
//!
//! Why the pods: only they talk to the upstream, with its credentials; the operator never does.
//! Why the metrics port: the names of tools a caller may not see are not for every caller of the
//! MCP endpoint (the NetworkPolicy admits the operator there). Why one pod: every pod of a server
//! fronts the same upstream with the same policy; the first ready pod by name that answers is
//! asked, and `status.upstream.reportedBy` names it.
//!
//! [`observe`] is the one I/O step (through the same [`ReadyProbe`] as the rollout);
//! [`tools_pinned`] is pure.

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use palisade_crds::conditions::reason;
use palisade_crds::inventory::{PinState, UpstreamInventory, UpstreamToolState};

use super::rollout::{ReadyProbe, ready_pods};

/// How many tools a condition message names; the rest are counted.
const NAMED_IN_MESSAGE: usize = 10;

/// What the operator learned of a proxy's upstream this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inventory {
    /// No pod of the server is ready.
    NoReadyPod,
    /// No ready pod answered; `pod: why` for each.
    Unanswered(String),
    /// A ready pod's inventory, `reportedBy` set.
    Reported(UpstreamInventory),
}

/// Asks the ready pods of McpServer `server` in `namespace`, in name order, until one answers.
pub async fn observe(pods: &Store<Pod>, probe: &dyn ReadyProbe, namespace: &str, server: &str) -> Inventory {
    let state = pods.state();
    let ready = ready_pods(
        state.iter().map(AsRef::as_ref),
        namespace,
        &crate::names::selector_labels(server),
        u16::try_from(crate::ports::METRICS).unwrap_or(9090),
    );
    if ready.is_empty() {
        return Inventory::NoReadyPod;
    }
    let mut unanswered = Vec::new();
    for pod in ready {
        match probe.inventory(pod.address).await {
            Ok(mut inventory) => {
                inventory.reported_by = Some(pod.name);
                return Inventory::Reported(inventory);
            }
            Err(error) => unanswered.push(format!("{}: {error}", pod.name)),
        }
    }
    Inventory::Unanswered(unanswered.join("; "))
}

/// Condition `ToolsPinned` from `inventory` (pure): whether it holds, its reason and message.
pub fn tools_pinned(inventory: &Inventory) -> (bool, &'static str, String) {
    let inventory = match inventory {
        Inventory::NoReadyPod => {
            return (
                false,
                reason::NO_INVENTORY,
                "no pod is ready, so no pod has listed the upstream's tools yet".into(),
            );
        }
        Inventory::Unanswered(why) => {
            return (
                false,
                reason::NO_INVENTORY,
                format!("no ready pod answered GET /inventory on its metrics port: {why}"),
            );
        }
        Inventory::Reported(inventory) => inventory,
    };
    let of = |pin: PinState| -> Vec<&UpstreamToolState> { inventory.tools.iter().filter(|t| t.pin == pin).collect() };
    let changed = of(PinState::Changed);
    if !changed.is_empty() {
        let named = listing(&changed, |t| {
            format!(
                "{} is now {} (pinned {}, {})",
                t.name,
                t.sha256,
                t.pinned_sha256.as_deref().unwrap_or_default(),
                served(t)
            )
        });
        return (
            false,
            reason::TOOLS_CHANGED,
            format!(
                "{} upstream tool(s) differ from their pins: {named}. Review each change; to accept it, set its new \
                 sha256 in spec.upstream.tools",
                changed.len()
            ),
        );
    }
    let unpinned = of(PinState::Unpinned);
    if !unpinned.is_empty() {
        let named = listing(&unpinned, |t| format!("{} {} ({})", t.name, t.sha256, served(t)));
        return (
            false,
            reason::TOOLS_UNPINNED,
            format!(
                "{} upstream tool(s) have no pin: {named}. Pin each reviewed definition in spec.upstream.tools",
                unpinned.len()
            ),
        );
    }
    let message = match inventory.tools.len() {
        0 => "the upstream offers no tool".to_owned(),
        n => format!("all {n} upstream tool(s) match their pins"),
    };
    (true, reason::AS_EXPECTED, message)
}

fn served(tool: &UpstreamToolState) -> &'static str {
    if tool.served { "served" } else { "withheld" }
}

/// The first [`NAMED_IN_MESSAGE`] tools written by `describe`, `; `-separated, and how many more.
fn listing(tools: &[&UpstreamToolState], describe: impl Fn(&UpstreamToolState) -> String) -> String {
    let mut text: Vec<String> = tools.iter().take(NAMED_IN_MESSAGE).map(|t| describe(t)).collect();
    if tools.len() > NAMED_IN_MESSAGE {
        text.push(format!(
            "and {} more in status.upstream.tools",
            tools.len() - NAMED_IN_MESSAGE
        ));
    }
    text.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, pin: PinState, served: bool) -> UpstreamToolState {
        UpstreamToolState {
            name: name.into(),
            sha256: format!("sha256:{}", "b".repeat(64)),
            pin,
            pinned_sha256: (pin == PinState::Changed).then(|| format!("sha256:{}", "a".repeat(64))),
            served,
            reachable: served,
        }
    }

    fn reported(tools: Vec<UpstreamToolState>) -> Inventory {
        Inventory::Reported(UpstreamInventory {
            policy_hash: "sha256:00".into(),
            tools,
            ..UpstreamInventory::default()
        })
    }

    #[test]
    fn a_changed_tool_outranks_an_unpinned_one_and_each_message_says_what_to_do() {
        let b = "b".repeat(64);
        let a = "a".repeat(64);
        let changed = reported(vec![
            tool("weather", PinState::Changed, false),
            tool("time", PinState::Unpinned, true),
        ]);
        assert_eq!(
            tools_pinned(&changed),
            (
                false,
                reason::TOOLS_CHANGED,
                format!(
                    "1 upstream tool(s) differ from their pins: weather is now sha256:{b} (pinned sha256:{a}, withheld). \
                     Review each change; to accept it, set its new sha256 in spec.upstream.tools"
                )
            )
        );
        let unpinned = reported(vec![tool("time", PinState::Unpinned, true)]);
        assert_eq!(
            tools_pinned(&unpinned),
            (
                false,
                reason::TOOLS_UNPINNED,
                format!(
                    "1 upstream tool(s) have no pin: time sha256:{b} (served). Pin each reviewed definition in \
                     spec.upstream.tools"
                )
            )
        );
        let pinned = reported(vec![tool("time", PinState::Pinned, true)]);
        assert_eq!(
            tools_pinned(&pinned),
            (
                true,
                reason::AS_EXPECTED,
                "all 1 upstream tool(s) match their pins".into()
            )
        );
        assert_eq!(tools_pinned(&Inventory::NoReadyPod).1, reason::NO_INVENTORY);
    }

    #[test]
    fn a_long_list_names_ten_and_counts_the_rest() {
        let many = reported(
            (0..13)
                .map(|i| tool(&format!("t{i:02}"), PinState::Unpinned, true))
                .collect(),
        );
        let (_, _, message) = tools_pinned(&many);
        assert!(
            message.starts_with("13 upstream tool(s) have no pin: t00 "),
            "{message}"
        );
        assert!(message.contains("t09 ") && !message.contains("t10 "), "{message}");
        assert!(message.contains("; and 3 more in status.upstream.tools."), "{message}");
    }
}
