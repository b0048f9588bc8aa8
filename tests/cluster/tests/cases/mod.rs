//! The cases, in the order they run.

pub mod api;
mod container_upstream;
mod event_cost;
mod external_secrets;
mod leader;
mod namespaced;
mod pod;
mod proxy;
mod reconcile;
mod restart;
mod rollout;
mod telemetry;

use crate::support::harness::CaseFn;

/// Every case: (name, function).
pub const ALL: &[(&str, CaseFn)] = &[
    ("api::crds_install_and_are_established", |c| {
        Box::pin(api::crds_install_and_are_established(c))
    }),
    ("api::samples_are_accepted", |c| Box::pin(api::samples_are_accepted(c))),
    ("api::kubectl_get_explain_and_printer_columns", |c| {
        Box::pin(api::kubectl_get_explain_and_printer_columns(c))
    }),
    ("api::every_cel_rule_rejects_its_bad_input_in_the_api_server", |c| {
        Box::pin(api::every_cel_rule_rejects_its_bad_input_in_the_api_server(c))
    }),
    (
        "reconcile::an_operator_started_late_reconciles_every_existing_server",
        |c| Box::pin(reconcile::an_operator_started_late_reconciles_every_existing_server(c)),
    ),
    (
        "reconcile::the_operator_reconciles_a_sample_as_its_service_account",
        |c| Box::pin(reconcile::the_operator_reconciles_a_sample_as_its_service_account(c)),
    ),
    (
        "reconcile::an_apply_refused_by_the_api_server_reaches_status_and_events",
        |c| {
            Box::pin(reconcile::an_apply_refused_by_the_api_server_reaches_status_and_events(
                c,
            ))
        },
    ),
    ("event_cost::a_status_only_change_of_a_child_costs_no_reconcile", |c| {
        Box::pin(event_cost::a_status_only_change_of_a_child_costs_no_reconcile(c))
    }),
    (
        "pod::the_running_server_follows_kubectl_apply_without_a_failed_request",
        |c| {
            Box::pin(pod::the_running_server_follows_kubectl_apply_without_a_failed_request(
                c,
            ))
        },
    ),
    (
        "proxy::a_proxy_reaches_its_upstream_with_the_secret_s_credentials_and_only_as_the_policy_says",
        |c| Box::pin(proxy::a_proxy_reaches_its_upstream_with_the_secret_s_credentials_and_only_as_the_policy_says(c)),
    ),
    (
        "container_upstream::a_stdio_upstream_runs_in_its_own_container_and_is_reached_through_palisade",
        |c| Box::pin(container_upstream::a_stdio_upstream_runs_in_its_own_container_and_is_reached_through_palisade(c)),
    ),
    (
        "rollout::policy_rolled_out_follows_the_hash_the_ready_pods_report",
        |c| Box::pin(rollout::policy_rolled_out_follows_the_hash_the_ready_pods_report(c)),
    ),
    (
        "namespaced::an_operator_with_roles_in_two_namespaces_reconciles_them_and_nothing_else",
        |c| Box::pin(namespaced::an_operator_with_roles_in_two_namespaces_reconciles_them_and_nothing_else(c)),
    ),
    ("leader::exactly_one_of_two_operators_writes", |c| {
        Box::pin(leader::exactly_one_of_two_operators_writes(c))
    }),
    (
        "telemetry::the_operator_and_the_pods_it_configures_export_traces",
        |c| Box::pin(telemetry::the_operator_and_the_pods_it_configures_export_traces(c)),
    ),
    (
        "restart::the_operator_recovers_from_an_api_server_and_etcd_restart",
        |c| Box::pin(restart::the_operator_recovers_from_an_api_server_and_etcd_restart(c)),
    ),
    // Last: it replaces the vendored External Secrets Operator CRDs with those of the release it
    // runs (tests/cluster/eso/crds/).
    (
        "external_secrets::an_external_secret_synced_by_external_secrets_operator_keys_the_running_server",
        |c| {
            Box::pin(
                external_secrets::an_external_secret_synced_by_external_secrets_operator_keys_the_running_server(c),
            )
        },
    ),
];
