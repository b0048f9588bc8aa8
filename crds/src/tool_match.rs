//! Tool names and the name patterns that tool rules match.
//!
//! Tool names follow the MCP naming guidance (2025-11-25, "Tool names"): 1 to 128 characters from
//! `A-Z a-z 0-9 _ - .`, case-sensitive. A rule's `match` is a tool name or a glob in which `*`
//! stands for any run of those characters, possibly empty (`get_*`, `*_info`, `*`).
//!
//! When several rules match one tool, the most specific one decides: an exact name beats every
//! glob, and among globs the one with more literal characters wins. Two different globs of equal
//! specificity that both match a tool are ambiguous, and the policy is rejected rather than
//! resolved by accident of ordering (see [`crate::evaluator`]).

use std::fmt;

/// Longest tool name (MCP naming guidance).
pub const MAX_TOOL_NAME_LEN: usize = 128;

/// Why a string is not a tool name or tool-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolNameError {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_TOOL_NAME_LEN`].
    TooLong,
    /// A character outside `A-Z a-z 0-9 _ - .` (and `*` in patterns).
    InvalidCharacter(char),
}

impl fmt::Display for ToolNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("tool name must not be empty"),
            Self::TooLong => write!(f, "tool name must be at most {MAX_TOOL_NAME_LEN} characters"),
            Self::InvalidCharacter(c) => write!(
                f,
                "tool name contains {c:?}; allowed are A-Z, a-z, 0-9, '_', '-' and '.' ('*' only in a match pattern)"
            ),
        }
    }
}

impl std::error::Error for ToolNameError {}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn check(name: &str, allow_star: bool) -> Result<(), ToolNameError> {
    if name.is_empty() {
        return Err(ToolNameError::Empty);
    }
    if name.len() > MAX_TOOL_NAME_LEN {
        return Err(ToolNameError::TooLong);
    }
    match name.chars().find(|&c| !(is_name_char(c) || (allow_star && c == '*'))) {
        Some(c) => Err(ToolNameError::InvalidCharacter(c)),
        None => Ok(()),
    }
}

/// Checks a tool name.
pub fn check_tool_name(name: &str) -> Result<(), ToolNameError> {
    check(name, false)
}

/// Longest resource URI (pattern) a resource rule matches.
pub const MAX_URI_LEN: usize = 2048;

/// Checks a resource URI or URI pattern: 1 to [`MAX_URI_LEN`] visible ASCII characters (RFC 3986
/// characters, `{}` of URI templates, `*`), no white space or control characters.
pub fn check_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("resource URI must not be empty".into());
    }
    if uri.len() > MAX_URI_LEN {
        return Err(format!("resource URI must be at most {MAX_URI_LEN} characters"));
    }
    match uri.chars().find(|c| !c.is_ascii_graphic()) {
        Some(c) => Err(format!(
            "resource URI contains {c:?}; allowed are visible ASCII characters (percent-encode the others)"
        )),
        None => Ok(()),
    }
}

/// Checks what a rule of `kind` can govern: a tool or prompt name ([`check_tool_name`]) or a
/// resource URI ([`check_uri`]).
pub fn check_target(kind: crate::document::RuleKind, name: &str) -> Result<(), String> {
    match kind {
        crate::document::RuleKind::Resource => check_uri(name),
        _ => check_tool_name(name).map_err(|e| e.to_string()),
    }
}

/// A rule's `match`: an exact tool name or a `*` glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPattern {
    pattern: String,
}

/// How specific a pattern is; greater is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    /// A glob with this many literal (non-`*`) characters.
    Glob(usize),
    /// An exact tool name.
    Exact,
}

impl ToolPattern {
    /// Parses a pattern.
    pub fn parse(pattern: &str) -> Result<Self, ToolNameError> {
        check(pattern, true)?;
        Ok(Self {
            pattern: pattern.to_owned(),
        })
    }

    /// Parses a pattern of `kind`: resource patterns are URIs (or URI templates) with `*`
    /// globs, 1 to [`MAX_URI_LEN`] visible ASCII characters; the others are name patterns.
    pub fn parse_for(kind: crate::document::RuleKind, pattern: &str) -> Result<Self, String> {
        match kind {
            crate::document::RuleKind::Resource => check_uri(pattern),
            _ => check(pattern, true).map_err(|e| e.to_string()),
        }?;
        Ok(Self {
            pattern: pattern.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern contains no `*`.
    pub fn is_exact(&self) -> bool {
        !self.pattern.contains('*')
    }

    /// How specific the pattern is.
    pub fn specificity(&self) -> Specificity {
        if self.is_exact() {
            Specificity::Exact
        } else {
            Specificity::Glob(self.pattern.chars().filter(|&c| c != '*').count())
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        star_match(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// Iterative `*`-only glob matching with single-star backtracking: linear in practice, never
/// exponential (`*a*a*a*b` against a long run of `a`s stays quadratic at worst).
pub(crate) fn star_match(pattern: &[u8], text: &[u8]) -> bool {
    star_match_by(pattern, text, |&c| c == b'*', |p, t| p == t)
}

/// [`star_match`] over any items: `is_star` items match any run of items (possibly empty), the
/// others one item each, as `matches` says.
pub(crate) fn star_match_by<P, T>(
    pattern: &[P],
    text: &[T],
    is_star: impl Fn(&P) -> bool,
    matches: impl Fn(&P, &T) -> bool,
) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && is_star(&pattern[p]) {
            resume = Some((p, t));
            p += 1;
        } else if p < pattern.len() && matches(&pattern[p], &text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = resume {
            p = star + 1;
            t = matched + 1;
            resume = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(is_star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        ToolPattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(m("get_public_info", "get_public_info"));
        assert!(!m("get_public_info", "get_public_info2"));
        assert!(m("get_*", "get_public_info"));
        assert!(m("get_*", "get_"));
        assert!(m("*_info", "get_confidential_info"));
        assert!(m("*", "anything"));
        assert!(m("get_*_info", "get_public_info"));
        assert!(!m("get_*_info", "get_public_infos"));
        assert!(m("*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*b", "aaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn exact_names_are_more_specific_than_any_glob() {
        let exact = ToolPattern::parse("get_public_info").unwrap().specificity();
        let long_glob = ToolPattern::parse("get_public_inf*").unwrap().specificity();
        let short_glob = ToolPattern::parse("get_*").unwrap().specificity();
        assert!(exact > long_glob);
        assert!(long_glob > short_glob);
        assert!(short_glob > ToolPattern::parse("*").unwrap().specificity());
    }

    #[test]
    fn bad_names_are_named() {
        assert_eq!(check_tool_name(""), Err(ToolNameError::Empty));
        assert_eq!(check_tool_name("get info"), Err(ToolNameError::InvalidCharacter(' ')));
        assert_eq!(check_tool_name("get_*"), Err(ToolNameError::InvalidCharacter('*')));
        assert_eq!(check_tool_name(&"a".repeat(129)), Err(ToolNameError::TooLong));
        assert_eq!(ToolPattern::parse("../x"), Err(ToolNameError::InvalidCharacter('/')));
    }
}
