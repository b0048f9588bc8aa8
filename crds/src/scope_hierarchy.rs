//! Scope hierarchies: a broader scope implies narrower ones (MCP authorization, 2026-07-28:
//! "Servers MUST account for scope hierarchies").
//!
//! A policy states them as `{scope: files, implies: ["files:*"]}`: the broader `scope` is literal
//! (the way an IdP issues it), and what it implies is read like the scopes a role grants, literal
//! or with `*` for one whole `:`-segment. Implications chain (`files` → `files:admin` →
//! `files:read`) and apply alike to the scopes in a token and to the scopes a role grants: a role
//! granting `files:admin` grants `files:read` too, and so does a role granting `*:admin`, whose
//! pattern covers `files:admin`.
//!
//! Refused, with the path of the implication: a broader scope that is not a literal scope, an
//! implied scope that is not a scope grant, a scope implying itself, one scope stated twice, and a
//! cycle (`a` implies `b` implies `a`): a cycle makes the scopes equal, which is never what
//! "broader" means and usually a typo.
//!
//! Pure: [`ScopeHierarchy::new`] resolves the chains once; the evaluator then asks which grants a
//! held scope brings with it.

use std::collections::HashMap;

use crate::document::ScopeImplication;
use crate::scope::{ScopeGrant, ScopeSyntaxError, check_literal_scope};

/// Most implied scopes of one implication.
pub const MAX_IMPLIED: usize = 32;

/// The implications of a document, resolved: for each broader scope, every grant it brings with
/// it, directly or through a chain.
#[derive(Debug, Default)]
pub struct ScopeHierarchy {
    /// The broader scopes, in document order.
    scopes: Vec<String>,
    /// Broader scope → its position in `scopes`.
    index: HashMap<String, usize>,
    /// For each broader scope: every grant of every implication reachable from it (its own
    /// included).
    implied: Vec<Vec<ScopeGrant>>,
}

/// Problems of `implications`, each with its path under `at` (`scopeImplications`): the
/// syntax of every scope, a scope stated twice, a scope implying itself, and cycles.
pub fn check(implications: &[ScopeImplication], at: &str) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, implication) in implications.iter().enumerate() {
        let path = format!("{at}[{i}]");
        match check_literal_scope(&implication.scope) {
            Err(ScopeSyntaxError::WildcardNotAllowed) => problems.push((
                format!("{path}.scope"),
                "the broader scope is literal, as an IdP issues it; '*' is only allowed in what it implies".into(),
            )),
            Err(e) => problems.push((format!("{path}.scope"), e.to_string())),
            Ok(()) => {}
        }
        if let Some(first) = seen.insert(&implication.scope, i) {
            problems.push((
                format!("{path}.scope"),
                format!(
                    "scope {:?} is already stated at {at}[{first}]; state what it implies once",
                    implication.scope
                ),
            ));
        }
        if implication.implies.is_empty() {
            problems.push((
                format!("{path}.implies"),
                "an implication must imply at least one scope".into(),
            ));
        }
        if implication.implies.len() > MAX_IMPLIED {
            problems.push((
                format!("{path}.implies"),
                format!("at most {MAX_IMPLIED} implied scopes"),
            ));
        }
        for (j, implied) in implication.implies.iter().enumerate() {
            if let Err(e) = ScopeGrant::parse(implied) {
                problems.push((format!("{path}.implies[{j}]"), e.to_string()));
            } else if *implied == implication.scope {
                problems.push((
                    format!("{path}.implies[{j}]"),
                    format!("scope {:?} implies itself", implication.scope),
                ));
            }
        }
    }
    if problems.is_empty()
        && let Some(cycle) = find_cycle(implications)
    {
        let names: Vec<&str> = cycle.iter().map(|&i| implications[i].scope.as_str()).collect();
        problems.push((
            format!("{at}[{}]", cycle[0]),
            format!(
                "scope implications form a cycle: {} -> {}; a broader scope must not be implied by a narrower one",
                names.join(" -> "),
                names[0]
            ),
        ));
    }
    problems
}

/// The edges between broader scopes: `i` → `j` when a grant `i` implies covers scope `j`
/// (`i` ≠ `j`). Implications must have been checked.
fn edges(implications: &[ScopeImplication]) -> Vec<Vec<usize>> {
    let grants: Vec<Vec<ScopeGrant>> = implications
        .iter()
        .map(|imp| imp.implies.iter().filter_map(|s| ScopeGrant::parse(s).ok()).collect())
        .collect();
    implications
        .iter()
        .enumerate()
        .map(|(i, _)| {
            implications
                .iter()
                .enumerate()
                .filter(|&(j, target)| j != i && grants[i].iter().any(|g| g.covers(&target.scope)))
                .map(|(j, _)| j)
                .collect()
        })
        .collect()
}

/// A cycle among the broader scopes, as the indexes along it starting at the smallest, if any.
fn find_cycle(implications: &[ScopeImplication]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(node: usize, edges: &[Vec<usize>], marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[node] = Mark::OnPath;
        path.push(node);
        for &next in &edges[node] {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|&n| n == next).expect("on the path");
                    return Some(path[start..].to_vec());
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, edges, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
        None
    }
    let edges = edges(implications);
    let mut marks = vec![Mark::New; implications.len()];
    for start in 0..implications.len() {
        if marks[start] == Mark::New
            && let Some(mut cycle) = visit(start, &edges, &mut marks, &mut Vec::new())
        {
            let smallest = (0..cycle.len()).min_by_key(|&k| cycle[k]).expect("a cycle has nodes");
            cycle.rotate_left(smallest);
            return Some(cycle);
        }
    }
    None
}

impl ScopeHierarchy {
    /// Resolves checked implications ([`check`] found no problem).
    pub fn new(implications: &[ScopeImplication]) -> Self {
        let edges = edges(implications);
        let mut implied = Vec::with_capacity(implications.len());
        for start in 0..implications.len() {
            let mut reached = vec![false; implications.len()];
            let mut stack = vec![start];
            reached[start] = true;
            while let Some(node) = stack.pop() {
                for &next in &edges[node] {
                    if !reached[next] {
                        reached[next] = true;
                        stack.push(next);
                    }
                }
            }
            let grants = reached
                .iter()
                .enumerate()
                .filter(|&(_, &r)| r)
                .flat_map(|(i, _)| implications[i].implies.iter())
                .map(|s| ScopeGrant::parse(s).expect("checked"))
                .collect();
            implied.push(grants);
        }
        let scopes: Vec<String> = implications.iter().map(|imp| imp.scope.clone()).collect();
        Self {
            index: scopes.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect(),
            scopes,
            implied,
        }
    }

    /// Whether no scope implies another.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The broader scopes, in document order (what [`ScopeHierarchy::position`] numbers).
    pub fn broader_scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(String::as_str)
    }

    /// Broader scope number `position`.
    pub fn scope(&self, position: usize) -> &str {
        &self.scopes[position]
    }

    /// The number of broader scope `scope`, if it implies anything.
    pub fn position(&self, scope: &str) -> Option<usize> {
        self.index.get(scope).copied()
    }

    /// Whether holding broader scope number `position` brings `scope` with it.
    pub fn implies(&self, position: usize, scope: &str) -> bool {
        self.implied[position].iter().any(|g| g.covers(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn implication(scope: &str, implies: &[&str]) -> ScopeImplication {
        ScopeImplication {
            scope: scope.into(),
            implies: implies.iter().map(|s| (*s).to_owned()).collect(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn implications_chain_and_patterns_cover() {
        let implications = [
            implication("files", &["files:admin"]),
            implication("files:admin", &["files:read", "files:write"]),
            implication("tickets", &["tickets:*"]),
        ];
        assert!(check(&implications, "scopeImplications").is_empty());
        let hierarchy = ScopeHierarchy::new(&implications);
        let files = hierarchy.position("files").unwrap();
        assert!(hierarchy.implies(files, "files:admin"));
        assert!(hierarchy.implies(files, "files:read"), "through files:admin");
        assert!(!hierarchy.implies(files, "files:delete"));
        let tickets = hierarchy.position("tickets").unwrap();
        assert!(hierarchy.implies(tickets, "tickets:read"));
        assert!(!hierarchy.implies(tickets, "tickets:read:all"), "one segment per *");
        assert_eq!(hierarchy.position("files:read"), None, "implies nothing");
        assert_eq!(
            hierarchy.broader_scopes().collect::<Vec<_>>(),
            ["files", "files:admin", "tickets"]
        );
    }

    #[test]
    fn a_pattern_reaches_the_broader_scopes_it_covers() {
        // `org` implies every one-segment scope, `files` among them, and so `files:read`.
        let implications = [implication("files", &["files:read"]), implication("org:admin", &["*"])];
        assert!(check(&implications, "scopeImplications").is_empty());
        let hierarchy = ScopeHierarchy::new(&implications);
        assert!(hierarchy.implies(hierarchy.position("org:admin").unwrap(), "files:read"));
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let implications = [
            implication("a", &["b"]),
            implication("b", &["c:*"]),
            implication("c:x", &["a"]),
        ];
        assert_eq!(
            check(&implications, "spec.scopeImplications"),
            [(
                "spec.scopeImplications[0]".to_owned(),
                "scope implications form a cycle: a -> b -> c:x -> a; a broader scope must not be implied by a narrower one"
                    .to_owned()
            )]
        );
        // A pattern that covers its own scope is no cycle: holding a scope holds it already.
        assert!(check(&[implication("files:admin", &["files:*"])], "x").is_empty());
    }

    #[test]
    fn malformed_implications_are_named() {
        let problems = check(
            &[
                implication("files:*", &["files:read"]),
                implication("a", &["a"]),
                implication("b", &[]),
                implication("c", &["doc*:read"]),
                implication("a", &["z"]),
            ],
            "scopeImplications",
        );
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "scopeImplications[0].scope",
                "scopeImplications[1].implies[0]",
                "scopeImplications[2].implies",
                "scopeImplications[3].implies[0]",
                "scopeImplications[4].scope"
            ]
        );
        assert_eq!(problems[1].1, "scope \"a\" implies itself");
        assert_eq!(
            problems[4].1,
            "scope \"a\" is already stated at scopeImplications[1]; state what it implies once"
        );
    }
}
