//! Child names cannot collide: for McpServers with adversarial names (one a prefix of the other,
//! names built from `docs`, `policy`, `hmac`, `api-keys` and hex digits) and collections named
//! after the other server's suffixes, every child the builders make has a (kind, name) no other
//! child of any of the servers has, and a name Kubernetes accepts.

use std::collections::BTreeMap;

use palisade_crds::McpServer;
use palisade_operator::{Settings, build_children, validate};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Pieces that make names collide under a naive `<server>-<role>-<collection>` scheme.
const TOKENS: [&str; 12] = [
    "foo",
    "docs",
    "policy",
    "hmac",
    "api",
    "keys",
    "api-keys",
    "docs-policy",
    "a",
    "0",
    "deadbeef",
    "x1",
];

/// A DNS label of at most `max` characters built from [`TOKENS`], or a random one; a letter first
/// when `letter_first` (server names are DNS-1035 labels).
fn label(max: usize, letter_first: bool) -> impl Strategy<Value = String> {
    let from_tokens = prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 1..6).prop_map(|t| t.join("-"));
    let random = "[a-z0-9][-a-z0-9]{0,70}";
    prop_oneof![3 => from_tokens, 1 => random].prop_map(move |raw| tidy(&raw, max, letter_first))
}

/// `raw` made a valid label: a letter first if asked, at most `max` characters, alphanumeric at
/// both ends.
fn tidy(raw: &str, max: usize, letter_first: bool) -> String {
    let mut name = raw.to_owned();
    if letter_first && !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert(0, 'x');
    }
    name.truncate(max);
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() { "x".into() } else { name }
}

/// One server: its name, its inline collections, and whether External Secrets Operator writes its
/// secrets (default Secret names).
#[derive(Debug, Clone)]
struct Case {
    name: String,
    collections: Vec<String>,
    external_secrets: bool,
}

fn case(name: impl Strategy<Value = String>) -> impl Strategy<Value = Case> {
    (name, prop::collection::vec(label(50, false), 0..4), any::<bool>()).prop_map(
        |(name, mut collections, external_secrets)| {
            collections.sort();
            collections.dedup();
            Case {
                name,
                collections,
                external_secrets,
            }
        },
    )
}

/// Two servers, the second often named after the first plus a suffix (`foo`, `foo-docs`), and a
/// third whose collections are the suffixes that would complete the others' names.
fn cases() -> impl Strategy<Value = Vec<Case>> {
    (label(63, true), label(40, false), any::<bool>())
        .prop_flat_map(|(first, suffix, derived)| {
            let second = if derived {
                tidy(&format!("{first}-{suffix}"), 63, true)
            } else {
                tidy(&suffix, 63, true)
            };
            (
                case(Just(first.clone())),
                case(Just(second)),
                case(Just(tidy(&format!("{first}-docs"), 63, true))),
                Just(suffix),
            )
        })
        .prop_map(|(a, b, mut c, suffix)| {
            // Collections that would rebuild another server's child names.
            c.collections.extend(["policy".to_owned(), tidy(&suffix, 50, false)]);
            c.collections.sort();
            c.collections.dedup();
            vec![a, b, c]
        })
}

fn server(case: &Case) -> McpServer {
    let documents: Vec<Value> = case
        .collections
        .iter()
        .map(|c| json!({"collection": c, "inline": [{"name": "policy.yaml", "content": "x"}]}))
        .collect();
    let external = json!({"externalSecret": {"storeRef": {"kind": "ClusterSecretStore", "name": "gcp"},
                                             "remoteKey": "k"}});
    let auth = if case.external_secrets {
        json!({"issuers": [{"issuer": "dev", "hmacKey": external.clone()},
                           {"issuer": "ci", "hmacKey": external.clone()}],
               "apiKeys": external})
    } else {
        json!({"allowAnonymous": true})
    };
    serde_json::from_value(json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": case.name, "namespace": "ns", "uid": format!("uid-{}", case.name)},
        "spec": {"documents": documents, "auth": auth},
    }))
    .expect("a valid McpServer")
}

/// The kind and name of a child.
type Key = (&'static str, String);
/// The server a child belongs to, and the child's index in `Children::iter`.
type Origin = (String, usize);

/// Every (kind, name) of every child of `cases`, with the server and the child's index.
fn children(cases: &[Case]) -> Vec<(Key, Origin)> {
    let settings = Settings::default();
    let mut all = Vec::new();
    for case in cases {
        let server = server(case);
        let validated = validate(&server, &[], &settings).unwrap_or_else(|e| panic!("{case:?} does not validate: {e}"));
        for (i, child) in build_children(&validated, &settings).iter().enumerate() {
            all.push(((child.kind(), child.name().to_owned()), (case.name.clone(), i)));
        }
    }
    all
}

/// A DNS-1123 subdomain as Kubernetes checks object names (`IsDNS1123Subdomain`): at most 253
/// characters, dot-separated runs of `[a-z0-9-]` that start and end alphanumeric.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn assert_unique(cases: &[Case]) -> Result<(), TestCaseError> {
    let mut seen: BTreeMap<Key, Origin> = BTreeMap::new();
    for (key, owner) in children(cases) {
        prop_assert!(is_dns_subdomain(&key.1), "{key:?} is not a valid object name");
        if key.0 == "Service" {
            prop_assert!(key.1.len() <= 63 && !key.1.contains('.'), "{key:?}");
        }
        if let Some(first) = seen.insert(key.clone(), owner.clone()) {
            prop_assert!(false, "{key:?} is built for {first:?} and for {owner:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_two_children_share_a_kind_and_name(cases in cases()) {
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        prop_assume!(names.len() == cases.len());
        assert_unique(&cases)?;
    }
}

/// The collision of issue 12, by hand: `foo` with collection `policy` and `foo-docs`.
#[test]
fn a_collection_named_policy_and_a_server_named_after_its_documents() {
    let cases = [
        Case {
            name: "foo".into(),
            collections: vec!["policy".into()],
            external_secrets: true,
        },
        Case {
            name: "foo-docs".into(),
            collections: vec![],
            external_secrets: true,
        },
        Case {
            name: "foo-docs-policy".into(),
            collections: vec!["policy".into()],
            external_secrets: false,
        },
    ];
    assert_unique(&cases).unwrap();
    let config_maps: Vec<String> = children(&cases)
        .into_iter()
        .filter(|((kind, _), _)| *kind == "ConfigMap")
        .map(|((_, name), _)| name)
        .collect();
    assert_eq!(
        config_maps,
        [
            "foo-policy",
            "foo.docs.policy",
            "foo-docs-policy",
            "foo-docs-policy-policy",
            "foo-docs-policy.docs.policy",
        ]
    );
}
