//! OAuth scopes and the scope patterns that roles grant.
//!
//! A *scope* is an RFC 6749 §3.3 `scope-token`: printable ASCII without space, `"` or `\`.
//! Palisade reads scopes as `:`-separated segments (`docs:read`). A role may grant a *pattern* in
//! which `*` stands for exactly one whole segment (`docs:*` covers `docs:read`, not `docs:read:all`
//! and not `docs`). A `*` inside a segment (`doc*:read`) is malformed, so a typo can never widen a
//! grant silently.
//!
//! Required scopes (what a tool needs) and the scopes inside a token are always literal: a `*` in
//! them matches only a literal `*` segment, never "everything".

use std::fmt;

/// Longest scope or scope pattern accepted anywhere (tokens, roles, tool rules).
pub const MAX_SCOPE_LEN: usize = 256;

/// Why a string is not a valid scope or scope pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeSyntaxError {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_SCOPE_LEN`].
    TooLong,
    /// A character outside RFC 6749's `scope-token` (space, control, `"`, `\`, non-ASCII).
    InvalidCharacter(char),
    /// A `*` that is not a whole `:`-segment, e.g. `doc*:read`.
    PartialWildcard,
    /// A `*` where only literal scopes are allowed (required scopes).
    WildcardNotAllowed,
}

impl fmt::Display for ScopeSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("scope must not be empty"),
            Self::TooLong => write!(f, "scope must be at most {MAX_SCOPE_LEN} characters"),
            Self::InvalidCharacter(c) => write!(
                f,
                "scope contains {c:?}; scopes are printable ASCII without spaces, '\"' or '\\' (RFC 6749 section 3.3)"
            ),
            Self::PartialWildcard => {
                f.write_str("malformed wildcard: '*' must stand for a whole ':'-separated segment, e.g. 'docs:*'")
            }
            Self::WildcardNotAllowed => {
                f.write_str("required scopes are literal; '*' is only allowed in the scopes a role grants")
            }
        }
    }
}

impl std::error::Error for ScopeSyntaxError {}

fn check_characters(scope: &str) -> Result<(), ScopeSyntaxError> {
    if scope.is_empty() {
        return Err(ScopeSyntaxError::Empty);
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeSyntaxError::TooLong);
    }
    match scope
        .chars()
        .find(|&c| !(c.is_ascii_graphic() && c != '"' && c != '\\'))
    {
        Some(c) => Err(ScopeSyntaxError::InvalidCharacter(c)),
        None => Ok(()),
    }
}

/// Checks a literal scope (a tool's required scope).
pub fn check_literal_scope(scope: &str) -> Result<(), ScopeSyntaxError> {
    check_characters(scope)?;
    if scope.contains('*') {
        return Err(ScopeSyntaxError::WildcardNotAllowed);
    }
    Ok(())
}

/// A scope a role grants: literal, or a pattern with whole-segment `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeGrant {
    /// Covers exactly this scope.
    Literal(String),
    /// Covers every scope with the same number of segments whose non-wildcard segments are equal.
    Pattern(Vec<PatternSegment>),
}

/// One `:`-segment of a [`ScopeGrant::Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternSegment {
    /// `*`: any one segment.
    Any,
    /// This exact text.
    Exact(String),
}

impl ScopeGrant {
    /// Parses a granted scope, rejecting malformed wildcards.
    pub fn parse(scope: &str) -> Result<Self, ScopeSyntaxError> {
        check_characters(scope)?;
        if !scope.contains('*') {
            return Ok(Self::Literal(scope.to_owned()));
        }
        scope
            .split(':')
            .map(|segment| match segment {
                "*" => Ok(PatternSegment::Any),
                s if s.contains('*') => Err(ScopeSyntaxError::PartialWildcard),
                s => Ok(PatternSegment::Exact(s.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Pattern)
    }

    /// Whether this grant covers the literal scope `scope`.
    pub fn covers(&self, scope: &str) -> bool {
        match self {
            Self::Literal(literal) => literal == scope,
            Self::Pattern(segments) => {
                let mut parts = scope.split(':');
                segments.iter().all(|segment| match (segment, parts.next()) {
                    (_, None) => false,
                    (PatternSegment::Any, Some(_)) => true,
                    (PatternSegment::Exact(expected), Some(part)) => expected == part,
                }) && parts.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_grants_cover_only_themselves() {
        let grant = ScopeGrant::parse("public:read").unwrap();
        assert!(grant.covers("public:read"));
        assert!(!grant.covers("public:readx"));
        assert!(!grant.covers("public"));
    }

    #[test]
    fn wildcards_cover_exactly_one_segment() {
        let grant = ScopeGrant::parse("docs:*").unwrap();
        assert!(grant.covers("docs:read"));
        assert!(grant.covers("docs:*"));
        assert!(!grant.covers("docs"));
        assert!(!grant.covers("docs:read:all"));
        assert!(!grant.covers("doc:read"));
        let grant = ScopeGrant::parse("*:read").unwrap();
        assert!(grant.covers("public:read"));
        assert!(!grant.covers("public:write"));
        let everything_one_segment = ScopeGrant::parse("*").unwrap();
        assert!(everything_one_segment.covers("admin"));
        assert!(!everything_one_segment.covers("admin:all"));
    }

    #[test]
    fn malformed_scopes_are_named() {
        assert_eq!(ScopeGrant::parse(""), Err(ScopeSyntaxError::Empty));
        assert_eq!(ScopeGrant::parse("doc*:read"), Err(ScopeSyntaxError::PartialWildcard));
        assert_eq!(ScopeGrant::parse("docs:re*"), Err(ScopeSyntaxError::PartialWildcard));
        assert_eq!(ScopeGrant::parse("docs:**"), Err(ScopeSyntaxError::PartialWildcard));
        assert_eq!(
            ScopeGrant::parse("docs read"),
            Err(ScopeSyntaxError::InvalidCharacter(' '))
        );
        assert_eq!(ScopeGrant::parse("dócs"), Err(ScopeSyntaxError::InvalidCharacter('ó')));
        assert_eq!(
            ScopeGrant::parse(&"a".repeat(MAX_SCOPE_LEN + 1)),
            Err(ScopeSyntaxError::TooLong)
        );
        assert_eq!(check_literal_scope("docs:*"), Err(ScopeSyntaxError::WildcardNotAllowed));
        assert_eq!(check_literal_scope("checklist.read"), Ok(()));
        assert_eq!(check_literal_scope("api://sso-mcp-server/read"), Ok(()));
    }
}
