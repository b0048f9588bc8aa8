//! `palisade-server token`: mint HS256 development tokens (seed 001's generator), so that a local
//! run and the tests can exercise every access path, including expired tokens.
//!
//! Tokens are signed with a key file, never a key on the command line (it would end up in shell
//! history and `ps`). Without `--key-file` or `--aud`, they are taken from the HMAC issuer named by
//! `--iss` in the policy file.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use palisade_crds::PolicyDocument;
use palisade_crds::document::KeySource;
use serde_json::{Map, Value, json};

use crate::auth::hmac_key_bytes;

/// Arguments of `palisade-server token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "developer")]
    pub sub: String,
    /// Scopes (`scope`, space-separated in the token); repeat or list several.
    #[arg(long = "scope", num_args = 0.., value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Roles (`roles`); repeat or list several.
    #[arg(long = "role", num_args = 0.., value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Groups (`groups`); repeat or list several.
    #[arg(long = "group", num_args = 0.., value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Lifetime: seconds or a duration (`1h`, `30m`, `45s`); negative for an already expired token.
    #[arg(long, default_value = "1h", allow_hyphen_values = true)]
    pub exp: String,
    /// Issuer (`iss`).
    #[arg(long, default_value = "palisade-dev")]
    pub iss: String,
    /// Audience (`aud`). Defaults to the issuer's first audience in the policy file.
    #[arg(long)]
    pub aud: Option<String>,
    /// File with the HMAC key. Defaults to the issuer's key file in the policy file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Policy file to read the issuer's key file and audience from.
    #[arg(long, env = "PALISADE_POLICY_FILE", default_value = palisade_crds::document::DEFAULT_POLICY_PATH)]
    pub policy_file: PathBuf,
}

/// Parses `3600`, `1h`, `-30m`, `45s` into seconds.
pub fn parse_lifetime(text: &str) -> Result<i64, String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (number, unit) = digits.split_at(digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len()));
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime like 3600, 1h, 30m or -1h"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    Ok(if negative { -number * factor } else { number * factor })
}

/// Mints the token the arguments describe.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    let lifetime = parse_lifetime(&args.exp)?;
    let (key_file, aud) = match (&args.key_file, &args.aud) {
        (Some(key), Some(aud)) => (key.clone(), aud.clone()),
        (key, aud) => {
            let text = std::fs::read_to_string(&args.policy_file).map_err(|e| {
                format!(
                    "cannot read {} ({e}); pass --key-file and --aud, or --policy-file",
                    args.policy_file.display()
                )
            })?;
            let document = PolicyDocument::from_yaml(&text).map_err(|e| e.to_string())?;
            let issuer = document
                .authentication
                .issuers
                .iter()
                .find(|i| i.issuer == args.iss)
                .ok_or_else(|| format!("the policy has no issuer {:?}", args.iss))?;
            let KeySource::HmacKeyFile(path) = &issuer.keys else {
                return Err(format!("issuer {:?} does not use an HMAC key", args.iss));
            };
            (
                key.clone().unwrap_or_else(|| PathBuf::from(path)),
                aud.clone().unwrap_or_else(|| issuer.audiences[0].clone()),
            )
        }
    };
    let key = std::fs::read(&key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(args.iss));
    claims.insert("sub".into(), json!(args.sub));
    claims.insert("aud".into(), json!(aud));
    claims.insert("iat".into(), json!(now.min(now + lifetime)));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("scope".into(), json!(args.scopes.join(" ")));
    if !args.roles.is_empty() {
        claims.insert("roles".into(), json!(args.roles));
    }
    if !args.groups.is_empty() {
        claims.insert("groups".into(), json!(args.groups));
    }
    jsonwebtoken::encode(
        &Header::default(),
        &Value::Object(claims),
        &EncodingKey::from_secret(&hmac_key_bytes(key)),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("3600"), Ok(3600));
        assert_eq!(parse_lifetime("1h"), Ok(3600));
        assert_eq!(parse_lifetime("-1h"), Ok(-3600));
        assert_eq!(parse_lifetime("30m"), Ok(1800));
        assert!(parse_lifetime("1w").is_err());
        assert!(parse_lifetime("soon").is_err());
    }
}
