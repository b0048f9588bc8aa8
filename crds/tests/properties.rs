//! Properties of the evaluator and the compiler over random policies and identities:
//! - a tool is listed iff a call to it is permitted (and likewise for collections);
//! - adding a scope, a role or a group never hides a tool;
//! - compiling the same policies in any order gives the same document and hash;
//! - a catalog of names (an upstream's tools) decides as the document does for the document's
//!   own names, lists exactly what it permits, and more scopes never hide a name;
//! - scope implications: a broader scope in a token decides exactly as the narrower scopes it
//!   implies (a reference closure), and adding an implication never hides a tool.

use std::collections::BTreeSet;

use palisade_crds::access_policy::{
    BindingSpec, McpAccessPolicySpec, RoleSpec, ScopeImplicationSpec, TargetRef, ToolRuleSpec,
};
use palisade_crds::common::{PolicyMode, SecretKeyRef, SecretKeySource};
use palisade_crds::mcp_server::{AuthSpec, ConfigMapRef, DocumentCollection, ToolAction, ToolSpec};
use palisade_crds::scope::ScopeGrant;
use palisade_crds::{
    CompileOptions, Identity, IdentitySource, McpAccessPolicy, McpServer, McpServerSpec, Reason, compile,
};
use proptest::prelude::*;

const SCOPES: [&str; 6] = ["a:read", "a:write", "b:read", "b:write", "c:read", "c:list"];
const GRANTS: [&str; 11] = [
    "a:read", "a:write", "b:read", "b:write", "c:read", "c:list", "a:*", "*:read", "c:*", "all", "b",
];
/// Broader scopes of the generated implications. Each implies grants, or broader scopes after
/// it in this list, so the generated hierarchies have no cycle.
const BROADER: [&str; 4] = ["all", "a", "b", "a:write"];
const ACTIONS: [ToolAction; 4] = [
    ToolAction::List,
    ToolAction::Get,
    ToolAction::Search,
    ToolAction::ReadAll,
];

#[derive(Debug, Clone)]
struct Case {
    tools: Vec<(usize, usize)>,                  // (collection, action) per tool t0..tn
    roles: Vec<Vec<usize>>,                      // grants per role r0..rn
    exact_rules: Vec<(usize, Vec<usize>, bool)>, // (tool, required scopes, in second policy)
    glob_rules: Vec<(usize, Vec<usize>)>,        // (glob index, required scopes)
    bindings: Vec<(usize, usize)>,               // (role, group)
    audit: (bool, bool),
    /// (broader scope, implied: indexes into GRANTS then BROADER, in second policy)
    implications: Vec<(usize, Vec<usize>, bool)>,
}

/// What the `case`'s implication `i` states, its cycles and self-implications left out.
fn implied(case: &Case, i: usize) -> Vec<String> {
    let (b, implies, _) = &case.implications[i];
    let mut list: Vec<String> = implies
        .iter()
        .filter(|&&k| k < GRANTS.len() || k - GRANTS.len() > *b)
        .map(|&k| {
            GRANTS
                .get(k)
                .copied()
                .unwrap_or_else(|| BROADER[k - GRANTS.len()])
                .to_owned()
        })
        // Only broader scopes after this one (GRANTS has some of them too).
        .filter(|s| BROADER.iter().position(|x| x == s).is_none_or(|x| x > *b))
        .collect();
    list.sort();
    list.dedup();
    list
}

/// The implications the generated policies state: (broader scope, implied, in second policy),
/// one per scope and policy (the list is keyed by scope), none that implies nothing.
fn stated_implications(case: &Case) -> Vec<(usize, Vec<String>, bool)> {
    let mut stated = BTreeSet::new();
    (0..case.implications.len())
        .filter_map(|i| {
            let (b, _, second) = case.implications[i];
            let implies = implied(case, i);
            (!implies.is_empty() && stated.insert((b, second))).then_some((b, implies, second))
        })
        .collect()
}

const GLOBS: [&str; 3] = ["*", "t*", "t1*"];
/// Names an upstream might offer: some the generated documents define (t0..t11), some only
/// globs match, some nothing matches but `*`.
const NAMES: [&str; 8] = ["t0", "t1", "t5", "t11", "t19", "t1x", "u1", "x"];

fn case() -> impl Strategy<Value = Case> {
    (1usize..12).prop_flat_map(|n| {
        (
            prop::collection::vec((0usize..3, 0usize..4), n),
            prop::collection::vec(prop::collection::vec(0usize..GRANTS.len(), 0..4), 0..5),
            prop::collection::btree_map(
                0..n,
                (prop::collection::vec(0usize..SCOPES.len(), 0..3), any::<bool>()),
                0..=n,
            ),
            prop::collection::btree_map(
                0usize..GLOBS.len(),
                prop::collection::vec(0usize..SCOPES.len(), 0..3),
                0..=2,
            ),
            prop::collection::vec((0usize..5, 0usize..4), 0..6),
            (prop::bool::weighted(0.2), prop::bool::weighted(0.2)),
            prop::collection::vec(
                (
                    0usize..BROADER.len(),
                    prop::collection::vec(0usize..GRANTS.len() + BROADER.len(), 1..4),
                    any::<bool>(),
                ),
                0..4,
            ),
        )
            .prop_map(|(tools, roles, exact, globs, bindings, audit, implications)| Case {
                tools,
                exact_rules: exact.into_iter().map(|(t, (s, second))| (t, s, second)).collect(),
                glob_rules: globs.into_iter().collect(),
                bindings: bindings.into_iter().filter(|(r, _)| *r < roles.len()).collect(),
                roles,
                audit,
                implications,
            })
    })
}

#[derive(Debug, Clone, Default)]
struct Caller {
    scopes: BTreeSet<usize>,
    /// Broader scopes in the token.
    broad: BTreeSet<usize>,
    roles: BTreeSet<usize>,
    groups: BTreeSet<usize>,
    anonymous: bool,
}

fn caller() -> impl Strategy<Value = Caller> {
    (
        prop::collection::btree_set(0usize..SCOPES.len(), 0..4),
        prop::collection::btree_set(0usize..6, 0..3),
        prop::collection::btree_set(0usize..4, 0..3),
        prop::bool::weighted(0.1),
        prop::collection::btree_set(0usize..BROADER.len(), 0..2),
    )
        .prop_map(|(scopes, roles, groups, anonymous, broad)| Caller {
            scopes,
            broad,
            roles,
            groups,
            anonymous,
        })
}

fn identity(caller: &Caller) -> Identity {
    Identity {
        source: (!caller.anonymous).then_some(IdentitySource::ApiKeys),
        subject: (!caller.anonymous).then(|| "someone".into()),
        scopes: caller
            .scopes
            .iter()
            .map(|&s| SCOPES[s].to_owned())
            .chain(caller.broad.iter().map(|&b| BROADER[b].to_owned()))
            .collect(),
        roles: caller.roles.iter().map(|r| format!("r{r}")).collect(),
        groups: caller.groups.iter().map(|g| format!("g{g}")).collect(),
        service_account: None,
        claims: Vec::new(),
        anonymous: caller.anonymous,
    }
}

/// Deterministic shuffle for order-independence checks.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        items.swap(i, (*seed >> 33) as usize % (i + 1));
    }
}

fn objects(case: &Case, seed: Option<u64>) -> (McpServer, Vec<McpAccessPolicy>) {
    let mut seed = seed.unwrap_or(0);
    let shuffling = seed != 0;
    let mut maybe_shuffle = |items: &mut dyn FnMut(&mut u64)| {
        if shuffling {
            items(&mut seed)
        }
    };
    let mut documents: Vec<DocumentCollection> = (0..3)
        .map(|c| DocumentCollection {
            collection: format!("c{c}"),
            description: None,
            config_map_ref: Some(ConfigMapRef {
                name: format!("docs-{c}"),
            }),
            inline: None,
        })
        .collect();
    let mut tools: Vec<ToolSpec> = case
        .tools
        .iter()
        .enumerate()
        .map(|(t, &(c, a))| ToolSpec {
            name: format!("t{t}"),
            title: None,
            description: None,
            collection: format!("c{c}"),
            action: ACTIONS[a],
        })
        .collect();
    maybe_shuffle(&mut |s| shuffle(&mut documents, s));
    maybe_shuffle(&mut |s| shuffle(&mut tools, s));
    let mut server = McpServer::new(
        "srv",
        McpServerSpec {
            replicas: None,
            image: None,
            image_pull_policy: None,
            documents,
            tools,
            upstream: None,
            // One source of subjects and groups (API keys), so that unqualified bindings mean it.
            auth: AuthSpec {
                allow_anonymous: true,
                api_keys: Some(SecretKeySource {
                    secret_key_ref: Some(SecretKeyRef {
                        name: "keys".into(),
                        key: "keys.yaml".into(),
                    }),
                    external_secret: None,
                }),
                ..AuthSpec::default()
            },
            service: None,
            resources: None,
            scheduling: None,
            pod_template: None,
            service_account: None,
            network_policy: None,
            pod_disruption_budget: None,
            autoscaling: None,
            telemetry: None,
        },
    );
    server.metadata.namespace = Some("ns".into());

    let scopes = |list: &[usize]| -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|&s| SCOPES[s].to_owned()).collect();
        v.dedup();
        v
    };
    let mut roles: Vec<RoleSpec> = case
        .roles
        .iter()
        .enumerate()
        .map(|(r, grants)| RoleSpec {
            name: format!("r{r}"),
            description: None,
            scopes: grants.iter().map(|&g| GRANTS[g].to_owned()).collect(),
        })
        .collect();
    let mut bindings: Vec<BindingSpec> = case
        .bindings
        .iter()
        .map(|&(r, g)| BindingSpec {
            role: format!("r{r}"),
            issuer: None,
            source: None,
            subjects: vec![],
            groups: vec![format!("g{g}")],
            service_accounts: vec![],
            anonymous: g == 3,
        })
        .collect();
    let (mut first_rules, mut second_rules) = (Vec::new(), Vec::new());
    for (t, required, second) in &case.exact_rules {
        let rule = ToolRuleSpec {
            match_: format!("t{t}"),
            required_scopes: scopes(required),
            arguments: Default::default(),
        };
        if *second {
            second_rules.push(rule)
        } else {
            first_rules.push(rule)
        }
    }
    for (g, required) in &case.glob_rules {
        first_rules.push(ToolRuleSpec {
            match_: GLOBS[*g].into(),
            required_scopes: scopes(required),
            arguments: Default::default(),
        });
    }
    for list in [&mut first_rules, &mut second_rules] {
        maybe_shuffle(&mut |s| shuffle(list, s));
        for rule in list.iter_mut() {
            maybe_shuffle(&mut |s| shuffle(&mut rule.required_scopes, s));
        }
    }
    let (mut first_implications, mut second_implications) = (Vec::new(), Vec::new());
    for (b, implies, second) in stated_implications(case) {
        let implication = ScopeImplicationSpec {
            scope: BROADER[b].to_owned(),
            implies,
        };
        if second {
            second_implications.push(implication);
        } else {
            first_implications.push(implication);
        }
    }
    for list in [&mut first_implications, &mut second_implications] {
        maybe_shuffle(&mut |s| shuffle(list, s));
        for implication in list.iter_mut() {
            maybe_shuffle(&mut |s| shuffle(&mut implication.implies, s));
        }
    }
    maybe_shuffle(&mut |s| shuffle(&mut roles, s));
    maybe_shuffle(&mut |s| shuffle(&mut bindings, s));
    let policy = |name: &str, spec: McpAccessPolicySpec| {
        let mut p = McpAccessPolicy::new(name, spec);
        p.metadata.namespace = Some("ns".into());
        p
    };
    let mode = |audit: bool| if audit { PolicyMode::Audit } else { PolicyMode::Enforce };
    let target = vec![TargetRef {
        name: "srv".into(),
        namespace: None,
    }];
    let mut policies = vec![
        policy(
            "first",
            McpAccessPolicySpec {
                target_refs: target.clone(),
                target_selector: None,
                roles,
                scope_implications: first_implications,
                tools: first_rules,
                prompts: vec![],
                resources: vec![],
                bindings,
                mode: mode(case.audit.0),
                tests: vec![],
            },
        ),
        policy(
            "second",
            McpAccessPolicySpec {
                target_refs: target,
                target_selector: None,
                roles: vec![],
                scope_implications: second_implications,
                tools: second_rules,
                prompts: vec![],
                resources: vec![],
                bindings: vec![],
                mode: mode(case.audit.1),
                tests: vec![],
            },
        ),
    ];
    maybe_shuffle(&mut |s| shuffle(&mut policies, s));
    (server, policies)
}

fn compiled(case: &Case, seed: Option<u64>) -> palisade_crds::Compiled {
    let (server, policies) = objects(case, seed);
    let refs: Vec<&McpAccessPolicy> = policies.iter().collect();
    compile(&server, &refs, &CompileOptions::default()).expect("generated policies are valid")
}

/// The required scopes (of SCOPES) a token holding `broad` holds through the implications of
/// `case`, by a fixpoint over what each held scope's implications cover: the reference the
/// evaluator's precomputed closure must agree with.
fn reference_closure(case: &Case, broad: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut held: BTreeSet<&str> = broad.iter().map(|&b| BROADER[b]).collect();
    let grants: Vec<(&str, Vec<ScopeGrant>)> = stated_implications(case)
        .into_iter()
        .map(|(b, implies, _)| {
            (
                BROADER[b],
                implies.iter().map(|s| ScopeGrant::parse(s).unwrap()).collect(),
            )
        })
        .collect();
    loop {
        let before = held.len();
        for (scope, implies) in &grants {
            if held.contains(scope) {
                for candidate in SCOPES.iter().chain(BROADER.iter()) {
                    if implies.iter().any(|g| g.covers(candidate)) {
                        held.insert(candidate);
                    }
                }
            }
        }
        if held.len() == before {
            break;
        }
    }
    (0..SCOPES.len()).filter(|&s| held.contains(SCOPES[s])).collect()
}

fn visible(compiled: &palisade_crds::Compiled, caller: &Caller) -> BTreeSet<String> {
    let access = compiled.policy.access(&identity(caller));
    access.visible_tools().map(|t| t.name.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn listing_equals_permission_to_call(case in case(), caller in caller()) {
        let compiled = compiled(&case, None);
        let access = compiled.policy.access(&identity(&caller));
        let listed: BTreeSet<&str> = access.visible_tools().map(|t| t.name.as_str()).collect();
        for tool in compiled.policy.tools() {
            let permitted = access.check_tool(&tool.name).effect.permits();
            prop_assert_eq!(listed.contains(tool.name.as_str()), permitted, "tool {}", tool.name);
        }
        let collections: BTreeSet<&str> = access.visible_collections().collect();
        for collection in ["c0", "c1", "c2"] {
            let permitted = access.check_collection(collection).effect.permits();
            prop_assert_eq!(collections.contains(collection), permitted, "collection {}", collection);
        }
    }

    #[test]
    fn more_scopes_roles_or_groups_never_hide_a_tool(
        case in case(),
        caller in caller(),
        extra_scope in 0usize..SCOPES.len(),
        extra_role in 0usize..6,
        extra_group in 0usize..4,
    ) {
        let compiled = compiled(&case, None);
        let before = visible(&compiled, &caller);
        for grown in [
            Caller { scopes: caller.scopes.iter().copied().chain([extra_scope]).collect(), ..caller.clone() },
            Caller { roles: caller.roles.iter().copied().chain([extra_role]).collect(), ..caller.clone() },
            Caller { groups: caller.groups.iter().copied().chain([extra_group]).collect(), ..caller.clone() },
        ] {
            let after = visible(&compiled, &grown);
            prop_assert!(before.is_subset(&after), "{:?} hid {:?}", grown, before.difference(&after).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_catalog_of_the_documents_tools_decides_as_the_document(case in case(), caller in caller()) {
        let compiled = compiled(&case, None);
        let policy = &compiled.policy;
        let catalog = policy.catalog(policy.tools().iter().map(|t| t.name.clone()));
        prop_assert_eq!(catalog.ambiguous().count(), 0);
        let access = policy.access(&identity(&caller));
        for tool in policy.tools() {
            let document = access.check_tool(&tool.name);
            let named = access.check_in(&catalog, &tool.name);
            prop_assert_eq!(
                (named.effect, named.reason, named.rule),
                (document.effect, document.reason, document.rule),
                "tool {}", tool.name
            );
        }
        let listed: Vec<&str> = access.visible_in(&catalog).collect();
        let document: Vec<&str> = access.visible_tools().map(|t| t.name.as_str()).collect();
        prop_assert_eq!(listed, document);
    }

    #[test]
    fn a_catalog_lists_exactly_what_it_permits_and_more_scopes_never_hide_a_name(
        case in case(),
        caller in caller(),
        names in prop::collection::vec(prop::sample::select(NAMES.to_vec()), 0..8),
        extra_scope in 0usize..SCOPES.len(),
    ) {
        let compiled = compiled(&case, None);
        let catalog = compiled.policy.catalog(names.iter().copied());
        let access = compiled.policy.access(&identity(&caller));
        let listed: BTreeSet<&str> = access.visible_in(&catalog).collect();
        for name in catalog.names() {
            let decision = access.check_in(&catalog, name);
            prop_assert_eq!(listed.contains(name.as_str()), decision.effect.permits(), "name {}", name);
            prop_assert!(decision.tool.is_none());
            if decision.reason == Reason::AmbiguousRules {
                prop_assert!(catalog.ambiguous().any(|a| a == name));
            }
        }
        prop_assert_eq!(access.check_in(&catalog, "not-offered").reason, Reason::UnknownTool);
        let grown = Caller { scopes: caller.scopes.iter().copied().chain([extra_scope]).collect(), ..caller.clone() };
        let access = compiled.policy.access(&identity(&grown));
        let after: BTreeSet<&str> = access.visible_in(&catalog).collect();
        prop_assert!(listed.is_subset(&after), "{:?} hid {:?}", grown, listed.difference(&after).collect::<Vec<_>>());
    }

    #[test]
    fn a_broader_scope_decides_as_the_scopes_it_implies(case in case(), caller in caller()) {
        let compiled = compiled(&case, None);
        let expanded = Caller {
            scopes: caller.scopes.iter().copied().chain(reference_closure(&case, &caller.broad)).collect(),
            broad: BTreeSet::new(),
            ..caller.clone()
        };
        prop_assert_eq!(visible(&compiled, &caller), visible(&compiled, &expanded));
    }

    #[test]
    fn an_implication_more_never_hides_a_tool(case in case(), caller in caller()) {
        prop_assume!(!case.implications.is_empty());
        // Leave out the first implication (and those the policy states for the same scope, which
        // `objects` drops for it).
        let (b, _, second) = &case.implications[0];
        let fewer = Case {
            implications: case.implications.iter().filter(|(c, _, s)| (c, s) != (b, second)).cloned().collect(),
            ..case.clone()
        };
        let before = visible(&compiled(&fewer, None), &caller);
        let after = visible(&compiled(&case, None), &caller);
        prop_assert!(before.is_subset(&after), "hid {:?}", before.difference(&after).collect::<Vec<_>>());
    }

    #[test]
    fn the_compiled_document_does_not_depend_on_input_order(case in case(), seed in 1u64..u64::MAX) {
        let reference = compiled(&case, None);
        let shuffled = compiled(&case, Some(seed));
        prop_assert_eq!(reference.policy.document().to_yaml(), shuffled.policy.document().to_yaml());
        prop_assert_eq!(reference.policy.hash(), shuffled.policy.hash());
    }
}
