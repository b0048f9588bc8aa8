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
//!
//! Further claims are read only when an argument rule names them (`{claims.team}`,
//! [`palisade_crds::Policy::claim_names`]): a string, or the strings of an array (at most
//! [`MAX_CLAIM_VALUES`], each at most [`MAX_CLAIM_VALUE_LEN`] bytes); any other value, or a longer
//! one, is left out, so a rule naming it matches nothing for that caller.

use palisade_crds::document::Claims;
use palisade_crds::{Identity, IdentitySource};
use serde_json::{Map, Value};

use super::error::{AuthError, Reason};

/// The identity carried by verified claims.
/// Most values read from one claim that argument rules name.
pub const MAX_CLAIM_VALUES: usize = palisade_crds::arguments::MAX_CLAIM_VALUES;

/// Longest claim value read for argument rules (a longer one could never be substituted).
pub const MAX_CLAIM_VALUE_LEN: usize = 253;

/// The identity `claims` describe, with the issuer's claim `names` and the claims argument rules
/// name (`rule_claims`, sorted).
pub fn identity(
    claims: &Map<String, Value>,
    names: &Claims,
    source: IdentitySource,
    rule_claims: &[String],
) -> Result<Identity, AuthError> {
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
        claims: rule_claims
            .iter()
            .filter_map(|name| Some((name.clone(), rule_claim(claims.get(name)?)?)))
            .collect(),
        anonymous: false,
    })
}

/// The values of a claim an argument rule names: a string, or the strings of an array; none
/// when it has no usable value.
fn rule_claim(value: &Value) -> Option<Vec<String>> {
    let usable = |s: &&String| s.len() <= MAX_CLAIM_VALUE_LEN;
    let values: Vec<String> = match value {
        Value::String(s) => std::iter::once(s).filter(usable).cloned().collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .filter(|s| usable(&s))
            .take(MAX_CLAIM_VALUES)
            .collect(),
        _ => Vec::new(),
    };
    (!values.is_empty()).then_some(values)
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
            &[],
        )
        .unwrap();
        assert_eq!(id.scopes, ["public:read", "confidential:read"]);
        let id = identity(
            &claims(json!({"sub": "a", "scp": ["checklist.read"]})),
            &names,
            idp(),
            &[],
        )
        .unwrap();
        assert_eq!(id.scopes, ["checklist.read"]);
        let id = identity(
            &claims(json!({"sub": "a", "roles": "admin", "groups": ["g1"]})),
            &names,
            idp(),
            &[],
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
            &[],
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
        let id = identity(&service_account_token(), &names, idp(), &[]).unwrap();
        assert_eq!(id.service_account.as_deref(), Some("team-a/builder"));
    }

    #[test]
    fn any_other_issuer_names_no_service_account() {
        // The same claims from an issuer that is not the cluster's service-account issuer: the
        // caller is its subject, never the service account.
        let id = identity(&service_account_token(), &Claims::default(), idp(), &[]).unwrap();
        assert_eq!(id.service_account, None);
        assert_eq!(id.subject.as_deref(), Some("system:serviceaccount:team-a:builder"));
    }

    #[test]
    fn only_the_claims_rules_name_are_read_and_only_usable_values() {
        let token = claims(json!({
            "sub": "a",
            "team": "ops",
            "projects": ["p1", 7, "p2"],
            "level": 3,
            "long": "x".repeat(MAX_CLAIM_VALUE_LEN + 1),
            "secret": "not named by any rule",
        }));
        let named: Vec<String> = ["level", "long", "missing", "projects", "team"]
            .map(str::to_owned)
            .to_vec();
        let id = identity(&token, &Claims::default(), idp(), &named).unwrap();
        assert_eq!(
            id.claims,
            [
                ("projects".to_owned(), vec!["p1".to_owned(), "p2".to_owned()]),
                ("team".to_owned(), vec!["ops".to_owned()]),
            ]
        );
        let many = claims(json!({"projects": (0..100).map(|i| format!("p{i}")).collect::<Vec<_>>()}));
        let id = identity(&many, &Claims::default(), idp(), &named).unwrap();
        assert_eq!(id.claims[0].1.len(), MAX_CLAIM_VALUES);
    }

    #[test]
    fn wrongly_typed_claims_are_rejected() {
        for bad in [json!({"sub": 7}), json!({"scope": {"a": 1}}), json!({"roles": [1, 2]})] {
            assert_eq!(
                identity(&claims(bad), &Claims::default(), idp(), &[]),
                Err(AuthError::InvalidToken(Reason::InvalidClaim))
            );
        }
    }
}
