//! The validate step (pure): check an McpServer with the policies that bind it, compile them
//! into one PolicyDocument, run the policies' test cases, and hand the builders a
//! [`ValidatedServer`], the only input they accept.
//!
//! The checks are [`palisade_crds::validate`], the same code `palisade-server policy check`,
//! `policy compile` and `policy explain` run, so a manifest gets the same verdict and the same
//! messages from the command lines, `render` and the controller. This module only supplies the
//! operator's [`Settings`]. It reads nothing from the cluster: the dereference step (the
//! controller, or `render` on files) finds the objects first.

use palisade_crds::{CompileOptions, McpAccessPolicy, McpServer};

use crate::settings::Settings;

pub use palisade_crds::validate::{MAX_CONFIG_MAP_DATA_BYTES, ValidateError, ValidatedServer, is_dns_1035_label};

/// Validates `server` with the policies that bind it (see [`crate::bind`]), for the cluster
/// `settings` describe (its DNS domain names the default audience, `auth.resource`).
pub fn validate<'a>(
    server: &'a McpServer,
    policies: &[&McpAccessPolicy],
    settings: &Settings,
) -> Result<ValidatedServer<'a>, ValidateError> {
    palisade_crds::validate::validate(server, policies, &compile_options(settings))
}

/// What the compiler needs to know of the cluster `settings` describe.
pub fn compile_options(settings: &Settings) -> CompileOptions<'_> {
    CompileOptions {
        cluster_domain: &settings.cluster_domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::server;

    const SERVER: &str = r#"
metadata: {name: s, namespace: ns}
spec:
  documents: [{collection: c, configMapRef: {name: c}}]
  tools: [{name: read, collection: c, action: readAll}]
  auth: {allowAnonymous: true}
"#;

    #[test]
    fn the_shared_checks_know_the_pods_metrics_port() {
        assert_eq!(palisade_crds::validate::METRICS_PORT, crate::ports::METRICS);
    }

    #[test]
    fn the_cluster_domain_names_the_default_audience_the_endpoint_and_an_accepted_host() {
        let settings = Settings {
            cluster_domain: "corp.internal".into(),
            ..Settings::default()
        };
        let server = server(SERVER);
        let validated = validate(&server, &[], &settings).unwrap();
        let resource = &validated.document().authentication.resource;
        assert_eq!(resource, "http://s.ns.svc.corp.internal/mcp");
        // status.endpoint (the controller) and the pods' accepted Host names (the builder) agree.
        assert_eq!(
            *resource,
            palisade_crds::compile::in_cluster_endpoint(&server, &settings.cluster_domain)
        );
        let hosts = crate::build::pod::allowed_hosts(&server, resource, &settings);
        assert!(hosts.contains(&"s.ns.svc.corp.internal".to_owned()), "{hosts:?}");
        assert!(!hosts.iter().any(|h| h.ends_with("cluster.local")), "{hosts:?}");

        let bad = Settings {
            cluster_domain: "corp internal".into(),
            ..Settings::default()
        };
        let error = validate(&server, &[], &bad).unwrap_err();
        assert_eq!(error.reason(), "PolicyInvalid");
        assert_eq!(
            error.to_string(),
            "invalid: the cluster domain \"corp internal\" is not a DNS subdomain (e.g. cluster.local)"
        );
    }
}
