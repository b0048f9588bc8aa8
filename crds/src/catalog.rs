//! Names a policy document does not define, decided by the same rules: the tools of an upstream
//! MCP server that Palisade stands in front of.
//!
//! A [`Catalog`] is prepared once per (policy, set of names), like [`Policy::new`] prepares the
//! document's own tools: each name gets the most specific rule matching it, over the policy's
//! interned scopes. [`Access::check_in`] and [`Access::visible_in`] then decide with the same
//! function as [`Access::check_tool`] and [`Access::visible_tools`], so a name is listed iff a
//! call to it is allowed, and a catalog of the document's own tool names decides exactly as the
//! document does.
//!
//! The one difference: a document whose tool is matched equally specifically by rules that
//! disagree is refused when it is loaded, but a catalog's names arrive later (from the upstream).
//! Such a name is not an error; it is denied with [`Reason::AmbiguousRules`] (fail closed) and
//! listed by [`Catalog::ambiguous`], so that it can be reported.
//!
//! ```
//! use palisade_crds::{Effect, Identity, Policy, PolicyDocument, Reason};
//!
//! let document = PolicyDocument::from_yaml(
//!     r#"
//! apiVersion: palisade.dev/v1alpha1
//! kind: PolicyDocument
//! metadata: {}
//! authentication: {resource: "http://files.team-a.svc.cluster.local/mcp", allowAnonymous: true}
//! rules:
//!   - {match: "read_*", requiredScopes: ["files:read"]}
//!   - {match: "*_file", requiredScopes: ["files:write"]}
//! roles: [{name: reader, scopes: ["files:read"]}]
//! bindings: [{role: reader, anonymous: true}]
//! "#,
//! )
//! .unwrap();
//! let policy = Policy::new(document).unwrap();
//! // The upstream's tools: none of them is in the document.
//! let catalog = policy.catalog(["read_text", "write_file", "read_file", "delete"]);
//!
//! let access = policy.access(&Identity::anonymous());
//! assert_eq!(access.check_in(&catalog, "read_text").effect, Effect::Allow);
//! assert_eq!(access.check_in(&catalog, "write_file").reason, Reason::MissingScopes);
//! assert_eq!(access.explain_in(&catalog, "write_file").missing, ["files:write"]);
//! assert_eq!(access.check_in(&catalog, "delete").reason, Reason::NoMatchingRule);
//! // "read_*" and "*_file" are equally specific and disagree about read_file.
//! assert_eq!(access.check_in(&catalog, "read_file").reason, Reason::AmbiguousRules);
//! assert_eq!(catalog.ambiguous().collect::<Vec<_>>(), ["read_file"]);
//! // Listing and calling agree.
//! assert_eq!(access.visible_in(&catalog).collect::<Vec<_>>(), ["read_text"]);
//! // A name the upstream does not offer is unknown.
//! assert_eq!(access.check_in(&catalog, "rm").reason, Reason::UnknownTool);
//! ```

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::common::PolicyMode;
use crate::document::RuleKind;
use crate::evaluator::{Access, Decision, Explanation, InputSchemaNarrowing, Policy, PreparedTool, Reason, Resolution};

/// Names prepared against one [`Policy`]: each with the rule that governs it.
#[derive(Debug)]
pub struct Catalog {
    /// The hash of the policy the names were prepared against.
    policy_hash: String,
    /// Sorted, without duplicates.
    names: Vec<String>,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

#[derive(Debug)]
enum Entry {
    Governed(PreparedTool),
    /// Rules of equal specificity disagree: denied in the document's mode.
    Ambiguous(PolicyMode),
}

impl Policy {
    /// Prepares `names` (duplicates are ignored) against this policy's rules.
    pub fn catalog<I, S>(&self, names: I) -> Catalog
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.catalog_of(RuleKind::Tool, names)
    }

    /// Prepares `names` of `kind` (prompt names, resource URIs) against this policy's rules of
    /// that kind, as [`Policy::catalog`] does for tools.
    pub fn catalog_of<I, S>(&self, kind: RuleKind, names: I) -> Catalog
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        names.sort_unstable();
        names.dedup();
        let entries = names
            .iter()
            .map(|name| match self.resolve(kind, name) {
                Resolution::Rules(rules) => Entry::Governed(self.prepare(&rules)),
                Resolution::NoRule => Entry::Governed(self.prepare(&[])),
                Resolution::Ambiguous(..) => Entry::Ambiguous(self.document().mode),
            })
            .collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Catalog {
            policy_hash: self.hash().to_owned(),
            names,
            entries,
            index,
        }
    }
}

impl Catalog {
    /// The names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The hash of the policy the catalog was prepared against.
    pub fn policy_hash(&self) -> &str {
        &self.policy_hash
    }

    /// The names of this catalog that at least one role (or no scope at all) can reach, and
    /// those none can, each sorted: [`Policy::reachability`] for names the document does not
    /// define. An ambiguous name is unreachable. `policy` must be the one the catalog was
    /// prepared against.
    pub fn reachability<'c>(&'c self, policy: &Policy) -> (Vec<&'c str>, Vec<&'c str>) {
        let (mut reachable, mut unreachable) = (Vec::new(), Vec::new());
        for (name, entry) in self.names.iter().zip(&self.entries) {
            match entry {
                Entry::Governed(tool) if policy.reachable(tool) => reachable.push(name.as_str()),
                _ => unreachable.push(name.as_str()),
            }
        }
        (reachable, unreachable)
    }

    /// Names matched equally specifically by rules that disagree (each denied), sorted.
    pub fn ambiguous(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .zip(&self.entries)
            .filter(|(_, entry)| matches!(entry, Entry::Ambiguous(_)))
            .map(|(name, _)| name.as_str())
    }
}

impl<'p> Access<'p> {
    /// May the caller call `name` of `catalog`? A name the catalog does not hold is unknown, and
    /// so is every name of a catalog prepared against another policy (fail closed: prepare the
    /// catalog again when the policy changes).
    pub fn check_in(&self, catalog: &Catalog, name: &str) -> Decision<'p> {
        self.decide_in(catalog, name, None)
    }

    /// May the caller call `name` of `catalog` with `arguments`? [`Access::check_call`] for a
    /// name the document does not define.
    pub fn check_call_in(&self, catalog: &Catalog, name: &str, arguments: Option<&Map<String, Value>>) -> Decision<'p> {
        self.decide_in(catalog, name, Some(arguments))
    }

    fn entry<'c>(&self, catalog: &'c Catalog, name: &str) -> Option<&'c Entry> {
        catalog
            .index
            .get(name)
            .filter(|_| catalog.policy_hash == self.policy().hash())
            .map(|&i| &catalog.entries[i])
    }

    fn decide_in(&self, catalog: &Catalog, name: &str, call: Option<Option<&Map<String, Value>>>) -> Decision<'p> {
        match self.entry(catalog, name) {
            Some(Entry::Governed(tool)) => self.decide_prepared(tool, call),
            Some(&Entry::Ambiguous(mode)) => Decision::refused(Reason::AmbiguousRules, mode),
            None => Decision::refused(Reason::UnknownTool, PolicyMode::Enforce),
        }
    }

    /// [`Access::check_in`] with what granted each required scope and what is missing (for the
    /// `scope` of a 403 challenge and the audit event).
    pub fn explain_in(&self, catalog: &Catalog, name: &str) -> Explanation<'p> {
        let tool = match self.entry(catalog, name) {
            Some(Entry::Governed(tool)) => Some(tool),
            _ => None,
        };
        self.explain_prepared(self.check_in(catalog, name), tool)
    }

    /// [`Access::check_call_in`] with what granted each scope of the deciding rule and what is
    /// missing.
    pub fn explain_call_in(
        &self,
        catalog: &Catalog,
        name: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Explanation<'p> {
        let tool = match self.entry(catalog, name) {
            Some(Entry::Governed(tool)) => Some(tool),
            _ => None,
        };
        self.explain_prepared(self.check_call_in(catalog, name, arguments), tool)
    }

    /// [`Access::input_schema_narrowing`] for name `name` of `catalog`.
    pub fn input_schema_narrowing_in(&self, catalog: &Catalog, name: &str) -> Option<InputSchemaNarrowing<'_>> {
        match self.entry(catalog, name) {
            Some(Entry::Governed(tool)) => self.narrowing_prepared(tool),
            _ => None,
        }
    }

    /// The names of `catalog` the caller sees: exactly those [`Access::check_in`] permits, in
    /// name order.
    pub fn visible_in<'c>(&'c self, catalog: &'c Catalog) -> impl Iterator<Item = &'c str> + 'c {
        catalog
            .names
            .iter()
            .filter(move |name| match self.entry(catalog, name) {
                Some(Entry::Governed(tool)) => self.lists(tool),
                Some(&Entry::Ambiguous(mode)) => mode == PolicyMode::Audit,
                None => false,
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Effect, Identity, Policy, PolicyDocument, Reason};

    fn policy(scope: &str) -> Policy {
        let yaml = format!(
            r#"
apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata: {{}}
authentication: {{resource: "http://up.team-a.svc.cluster.local/mcp", allowAnonymous: true}}
rules: [{{match: "*", requiredScopes: ["{scope}"]}}]
roles: [{{name: all, scopes: ["{scope}"]}}]
bindings: [{{role: all, anonymous: true}}]
"#
        );
        Policy::new(PolicyDocument::from_yaml(&yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_catalog_prepared_against_another_policy_knows_no_name() {
        let (old, new) = (policy("a:read"), policy("b:read"));
        let catalog = old.catalog(["echo"]);
        let anonymous = Identity::anonymous();
        assert_eq!(old.access(&anonymous).check_in(&catalog, "echo").effect, Effect::Allow);
        let decision = new.access(&anonymous).check_in(&catalog, "echo");
        assert_eq!((decision.effect, decision.reason), (Effect::Deny, Reason::UnknownTool));
        assert_eq!(new.access(&anonymous).visible_in(&catalog).count(), 0);
        // Prepared again, the names are decided by the new policy.
        let catalog = new.catalog(catalog.names().iter().cloned());
        assert_eq!(catalog.policy_hash(), new.hash());
        assert_eq!(new.access(&anonymous).check_in(&catalog, "echo").effect, Effect::Allow);
    }

    #[test]
    fn duplicates_are_one_name() {
        let policy = policy("a:read");
        let catalog = policy.catalog(["b", "a", "b"]);
        assert_eq!(catalog.names(), ["a", "b"]);
    }

    #[test]
    fn prompts_and_resources_are_decided_by_the_rules_of_their_kind_only() {
        let yaml = r#"
apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata: {}
authentication: {resource: "http://up.team-a.svc.cluster.local/mcp", allowAnonymous: true}
rules:
  - {match: "*", requiredScopes: ["tools:call"]}
  - {kind: prompt, match: "simple_*", requiredScopes: ["prompts:read"]}
  - {kind: resource, match: "file:///data/public/*", requiredScopes: ["files:read"]}
  - {kind: resource, match: "*", requiredScopes: ["files:admin"]}
roles: [{name: reader, scopes: ["prompts:read", "files:read"]}]
bindings: [{role: reader, anonymous: true}]
"#;
        let policy = Policy::new(PolicyDocument::from_yaml(yaml).unwrap()).unwrap();
        let access = policy.access(&Identity::anonymous());
        let prompts = policy.catalog_of(crate::document::RuleKind::Prompt, ["simple_prompt", "complex_prompt"]);
        assert_eq!(access.visible_in(&prompts).collect::<Vec<_>>(), ["simple_prompt"]);
        // The tool rule "*" does not govern prompts: no prompt rule matches complex_prompt.
        assert_eq!(
            access.check_in(&prompts, "complex_prompt").reason,
            Reason::NoMatchingRule
        );
        let uris = [
            "file:///data/public/a.txt",
            "file:///data/public/sub/b.txt",
            "file:///data/secret/c.txt",
        ];
        let resources = policy.catalog_of(crate::document::RuleKind::Resource, uris);
        assert_eq!(
            access.visible_in(&resources).collect::<Vec<_>>(),
            ["file:///data/public/a.txt", "file:///data/public/sub/b.txt"]
        );
        assert_eq!(
            access.explain_in(&resources, "file:///data/secret/c.txt").missing,
            ["files:admin"]
        );
        // Tools are decided by tool rules only, as before.
        let tools = policy.catalog(["simple_prompt"]);
        assert_eq!(access.check_in(&tools, "simple_prompt").reason, Reason::MissingScopes);
        // A document that names no prompt or resource rule keeps its form (and hash).
        assert!(!policy.document().to_yaml().contains("kind: tool"));
    }
}
