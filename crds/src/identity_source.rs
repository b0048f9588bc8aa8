//! Where an identity comes from: one JWT issuer, the server's API-key table, or the client
//! certificates its TLS layer verifies. Subjects and groups are only ever compared within one
//! source, so `alice` of one issuer is never `alice` of another issuer, of an API key or of a
//! client certificate.
//!
//! In an McpAccessPolicy a binding names its source with `issuer: <iss>` (a JWT issuer of the
//! server) or `source: ApiKeys` / `source: ClientCertificates`; in the PolicyDocument every
//! binding with subjects or groups carries it as `from: {issuer: <iss>}`, `from: {apiKeys: true}`
//! or `from: {clientCertificates: true}`. A binding that names no source is taken to mean the one
//! source of its server, and refused when the server has several ([`resolve`]).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::document::Authentication;

/// The source of an identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(try_from = "IdentitySourceFields", into = "IdentitySourceFields")]
pub enum IdentitySource {
    /// JWTs whose `iss` is exactly this value.
    Issuer(String),
    /// The server's API-key table.
    ApiKeys,
    /// Client certificates verified by the server's TLS layer (`--tls-client-ca`).
    ClientCertificates,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Issuer(issuer) => write!(f, "issuer {issuer:?}"),
            Self::ApiKeys => f.write_str("API keys"),
            Self::ClientCertificates => f.write_str("client certificates"),
        }
    }
}

impl IdentitySource {
    /// Stable short name for audit events, metrics and rate-limit keys: the issuer itself,
    /// `apiKeys` or `clientCertificates`.
    pub fn name(&self) -> &str {
        match self {
            Self::Issuer(issuer) => issuer,
            Self::ApiKeys => "apiKeys",
            Self::ClientCertificates => "clientCertificates",
        }
    }
}

/// The identity sources of an McpAccessPolicy binding or test identity other than a JWT issuer.
// NB: no doc comments on the variants (see `ImagePullPolicy`): the field keeps its own description.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum BindingSource {
    ApiKeys,
    ClientCertificates,
}

impl From<BindingSource> for IdentitySource {
    fn from(source: BindingSource) -> Self {
        match source {
            BindingSource::ApiKeys => Self::ApiKeys,
            BindingSource::ClientCertificates => Self::ClientCertificates,
        }
    }
}

/// The YAML form of [`IdentitySource`]: a map with exactly one key.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentitySourceFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    api_keys: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    client_certificates: bool,
}

impl TryFrom<IdentitySourceFields> for IdentitySource {
    type Error = String;

    fn try_from(fields: IdentitySourceFields) -> Result<Self, String> {
        match (fields.issuer, fields.api_keys, fields.client_certificates) {
            (Some(issuer), false, false) => Ok(Self::Issuer(issuer)),
            (None, true, false) => Ok(Self::ApiKeys),
            (None, false, true) => Ok(Self::ClientCertificates),
            _ => Err("from must set exactly one of issuer, apiKeys: true or clientCertificates: true".into()),
        }
    }
}

impl From<IdentitySource> for IdentitySourceFields {
    fn from(source: IdentitySource) -> Self {
        match source {
            IdentitySource::Issuer(issuer) => Self {
                issuer: Some(issuer),
                ..Self::default()
            },
            IdentitySource::ApiKeys => Self {
                api_keys: true,
                ..Self::default()
            },
            IdentitySource::ClientCertificates => Self {
                client_certificates: true,
                ..Self::default()
            },
        }
    }
}

/// The sources of a server that produce subjects or groups by themselves: its JWT issuers and its
/// API-key table. (Client certificates are not configured in the policy but by the server's
/// `--tls-client-ca`; their bindings always say `ClientCertificates`.)
pub fn configured_sources(auth: &Authentication) -> Vec<IdentitySource> {
    let mut sources: Vec<IdentitySource> = auth
        .issuers
        .iter()
        .map(|i| IdentitySource::Issuer(i.issuer.clone()))
        .collect();
    if auth.api_keys_file.is_some() {
        sources.push(IdentitySource::ApiKeys);
    }
    sources
}

/// What an unqualified binding or test identity with subjects or groups means on a server with
/// `sources`: the one source, or an error message that says how to qualify it.
pub fn resolve(sources: &[IdentitySource], how_to_qualify: &str) -> Result<IdentitySource, String> {
    match sources {
        [only] => Ok(only.clone()),
        [] => Err(
            "the server accepts no credential that carries a subject or group (no issuer, no API keys); \
             configure one, or bind service accounts or anonymous callers instead"
                .to_owned(),
        ),
        several => {
            let names: Vec<String> = several.iter().map(ToString::to_string).collect();
            Err(format!(
                "the server accepts identities from {} sources ({}), so subjects and groups must say which \
                 one they belong to: {how_to_qualify}",
                several.len(),
                names.join(", ")
            ))
        }
    }
}

/// Whether `source` is one a server with `auth` can authenticate, else why not.
pub fn check_known(source: &IdentitySource, auth: &Authentication) -> Result<(), String> {
    match source {
        IdentitySource::Issuer(issuer) if !auth.issuers.iter().any(|i| &i.issuer == issuer) => Err(format!(
            "issuer {issuer:?} is not an issuer of the server ({})",
            issuer_list(auth)
        )),
        IdentitySource::ApiKeys if auth.api_keys_file.is_none() => {
            Err("the server has no API-key table, so no caller comes from API keys".to_owned())
        }
        _ => Ok(()),
    }
}

fn issuer_list(auth: &Authentication) -> String {
    if auth.issuers.is_empty() {
        return "it has none".to_owned();
    }
    let names: Vec<String> = auth.issuers.iter().map(|i| format!("{:?}", i.issuer)).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapper {
        from: IdentitySource,
    }

    #[test]
    fn sources_are_plain_yaml_maps_with_one_key() {
        for (source, yaml) in [
            (
                IdentitySource::Issuer("https://idp".into()),
                "from:\n  issuer: https://idp\n",
            ),
            (IdentitySource::ApiKeys, "from:\n  apiKeys: true\n"),
            (
                IdentitySource::ClientCertificates,
                "from:\n  clientCertificates: true\n",
            ),
        ] {
            let wrapper = Wrapper { from: source };
            assert_eq!(yaml_serde::to_string(&wrapper).unwrap(), yaml);
            assert_eq!(yaml_serde::from_str::<Wrapper>(yaml).unwrap(), wrapper);
        }
        for bad in ["from: {}", "from: {issuer: a, apiKeys: true}", "from: {apiKeys: false}"] {
            let error = yaml_serde::from_str::<Wrapper>(bad).unwrap_err().to_string();
            assert!(
                error.contains("from must set exactly one of issuer, apiKeys: true or clientCertificates: true"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn one_source_resolves_several_are_refused_with_how_to_qualify() {
        let a = IdentitySource::Issuer("https://a".into());
        assert_eq!(resolve(std::slice::from_ref(&a), "set issuer"), Ok(a.clone()));
        assert_eq!(
            resolve(&[a, IdentitySource::ApiKeys], "set issuer or source").unwrap_err(),
            "the server accepts identities from 2 sources (issuer \"https://a\", API keys), so subjects and \
             groups must say which one they belong to: set issuer or source"
        );
        assert!(
            resolve(&[], "x")
                .unwrap_err()
                .starts_with("the server accepts no credential")
        );
    }
}
