//! From verified JWT claims to the evaluator's [`Identity`], using the issuer's claim names.
//!
//! Scopes may be a space-separated string (RFC 8693 `scope`, RFC 9068) or an array (`scp` of
//! Entra ID); `scp` is read when the configured claim is the default `scope` and absent.
//!
//! Only a token of the cluster's service-account issuer (claims `kubernetesServiceAccount: true`
//! in the PolicyDocument, from `kubernetesServiceAccounts: true` on the McpServer's issuer) names
//! a service account: its `kubernetes.io` claim (`namespace`, `serviceaccount.name`) makes the
//! caller `namespace/name`, for bindings by service account. The same claim in a token of any
//! other issuer is ignored, since that issuer may write any service account into it.

use palisade_crds::document::Claims;
use palisade_crds::{Identity, IdentitySource};
use serde_json::{Map, Value};

use super::error::{AuthError, Reason};

/// The identity carried by verified claims.
pub fn identity(claims: &Map<String, Value>, names: &Claims, source: IdentitySource) -> Result<Identity, AuthError> {
    let subject = match claims.get(&names.subject) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::InvalidToken(Reason::InvalidClaim)),
    };
    let scopes = match claims.get(&names.scopes) {
        None if names.scopes == "scope" => strings(claims.get("scp"), true)?,
        value => strings(value, true)?,
    };
    Ok(Identity {
        source: Some(source),
        subject,
        scopes,
        roles: strings(claims.get(&names.roles), false)?,
        groups: strings(claims.get(&names.groups), false)?,
        service_account: if names.kubernetes_service_account {
            kubernetes_service_account(claims)
        } else {
            None
        },
        anonymous: false,
    })
}

/// A claim that is a string (space-separated when `split`), an array of strings, or absent.
fn strings(value: Option<&Value>, split: bool) -> Result<Vec<String>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if split => Ok(s.split_ascii_whitespace().map(str::to_owned).collect()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(AuthError::InvalidToken(Reason::InvalidClaim)),
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidToken(Reason::InvalidClaim)),
    }
}

/// `namespace/name` from a projected service-account token's `kubernetes.io` claim.
fn kubernetes_service_account(claims: &Map<String, Value>) -> Option<String> {
    let kubernetes = claims.get("kubernetes.io")?;
    let namespace = kubernetes.get("namespace")?.as_str()?;
    let name = kubernetes.get("serviceaccount")?.get("name")?.as_str()?;
    Some(format!("{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idp() -> IdentitySource {
        IdentitySource::Issuer("https://idp.example.com".into())
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn scopes_from_a_string_or_an_array() {
        let names = Claims::default();
        let id = identity(
            &claims(json!({"sub": "a", "scope": "public:read confidential:read"})),
            &names,
            idp(),
        )
        .unwrap();
        assert_eq!(id.scopes, ["public:read", "confidential:read"]);
        let id = identity(&claims(json!({"sub": "a", "scp": ["checklist.read"]})), &names, idp()).unwrap();
        assert_eq!(id.scopes, ["checklist.read"]);
        let id = identity(
            &claims(json!({"sub": "a", "roles": "admin", "groups": ["g1"]})),
            &names,
            idp(),
        )
        .unwrap();
        assert_eq!((id.roles, id.groups), (vec!["admin".to_owned()], vec!["g1".to_owned()]));
    }

    #[test]
    fn configured_claim_names_are_used() {
        let names = Claims {
            subject: "email".into(),
            scopes: "permissions".into(),
            roles: "app_roles".into(),
            groups: "teams".into(),
            kubernetes_service_account: false,
        };
        let id = identity(
            &claims(json!({"sub": "x", "email": "a@example.com", "permissions": ["p:r"], "scp": "ignored"})),
            &names,
            idp(),
        )
        .unwrap();
        assert_eq!(id.subject.as_deref(), Some("a@example.com"));
        assert_eq!(id.scopes, ["p:r"]);
    }

    fn service_account_token() -> Map<String, Value> {
        claims(json!({
            "sub": "system:serviceaccount:team-a:builder",
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder", "uid": "u"}}
        }))
    }

    #[test]
    fn the_service_account_issuer_names_the_account() {
        let names = Claims {
            kubernetes_service_account: true,
            ..Claims::default()
        };
        let id = identity(&service_account_token(), &names, idp()).unwrap();
        assert_eq!(id.service_account.as_deref(), Some("team-a/builder"));
    }

    #[test]
    fn any_other_issuer_names_no_service_account() {
        // The same claims from an issuer that is not the cluster's service-account issuer: the
        // caller is its subject, never the service account.
        let id = identity(&service_account_token(), &Claims::default(), idp()).unwrap();
        assert_eq!(id.service_account, None);
        assert_eq!(id.subject.as_deref(), Some("system:serviceaccount:team-a:builder"));
    }

    #[test]
    fn wrongly_typed_claims_are_rejected() {
        for bad in [json!({"sub": 7}), json!({"scope": {"a": 1}}), json!({"roles": [1, 2]})] {
            assert_eq!(
                identity(&claims(bad), &Claims::default(), idp()),
                Err(AuthError::InvalidToken(Reason::InvalidClaim))
            );
        }
    }
}
