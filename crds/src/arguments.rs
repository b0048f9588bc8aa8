//! Argument constraints of tool rules: which arguments a rule lets a caller send.
//!
//! A tool rule may constrain named arguments of the calls it allows
//! (`arguments: {path: {glob: ["/data/public/**"]}}`). Every constrained argument must satisfy
//! every kind of constraint given for it; within one kind (`glob`, `in`, `prefix`) one listed value
//! suffices. Arguments a rule does not name are not constrained by it.
//!
//! - A constrained argument is **required** unless `required: false`: a call without it fails
//!   closed. With `required: false` a missing (or `null`) argument passes; a present one must
//!   satisfy the constraints.
//! - `glob`, `prefix`, `in`, `regex` and `maxLength` need a string; `min` and `max` a number.
//!   Any other type fails closed. An array is checked element by element (every element must
//!   satisfy, as for `read_multiple_files`' `paths`).
//! - `glob` and `prefix` match the value as a **path**, after normalisation, under each of two
//!   readings that must both match: the text as sent, and the text percent-decoded (repeatedly,
//!   up to [`MAX_DECODE_ROUNDS`] times) with `\` read as `/`. Each reading is normalised lexically:
//!   empty and `.` segments are dropped, `..` removes the segment before it (a `..` above the
//!   root stays at the root; a leading `..` of a relative path stays and so never matches a glob
//!   below a directory), trailing slashes are dropped. `/data/public/../secret`,
//!   `/data/public/%2e%2e/secret` and `/data/public/..%2fsecret` therefore never match
//!   `/data/public/**`. Values with control characters or bytes that do not decode to UTF-8
//!   match no glob or prefix. Matching is case-sensitive. `prefix` is a plain prefix of both
//!   readings (not normalised, so `https://` keeps its slashes), and a value with a `..` segment
//!   in either reading never satisfies it.
//! - In a glob, `/` separates segments, `*` stands for any run of characters within one segment,
//!   `**` (a whole segment) for any number of segments, zero included. A glob is written in
//!   normal form: no empty, `.` or `..` segment, no trailing `/`.
//! - `regex` is anchored at both ends and matched against the value as sent (no normalisation);
//!   the engine is RE2-style (the `regex` crate): linear time, no backreferences or look-around.
//! - `glob`, `prefix` and `in` values may name the caller: `{subject}`, `{group}` (any one of the
//!   caller's groups), `{serviceAccount.namespace}`, `{serviceAccount.name}`, `{claims.NAME}`
//!   (the top-level token claim `NAME`, a string or any one string of an array; only the claims
//!   some rule names are read from a token, see [`MAX_CLAIM_VALUES`]). A caller value is
//!   substituted literally (it is never read as a glob) and only when it is a safe path segment:
//!   non-empty, at most 253 characters, without `/`, `\`, `*`, `{`, `}`, `%` or control
//!   characters, and not `.` or `..`. A caller without such a value (no subject, no group) gets no
//!   match from that pattern: the rule does not allow it.
//!
//! Matching never echoes the value: an [`ArgumentFailure`] names the argument and the constraint.

use std::collections::BTreeMap;
use std::fmt;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Most times a value is percent-decoded before a reading is given up on (and fails closed).
pub const MAX_DECODE_ROUNDS: usize = 3;
/// Most arguments one rule may constrain.
pub const MAX_ARGUMENTS: usize = 16;
/// Most values in one `in` list (`glob` and `prefix` lists: [`MAX_PATTERNS`]).
pub const MAX_VALUES: usize = 64;
/// Most values in one `glob` or `prefix` list.
pub const MAX_PATTERNS: usize = 16;
/// Longest glob, prefix, `in` value or regex.
pub const MAX_PATTERN_LEN: usize = 512;
/// Largest compiled regex program, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 18;
/// Most concrete patterns one caller-dependent pattern expands to (a caller with many groups).
const MAX_EXPANSIONS: usize = 256;

/// Constraints on one argument of the calls a rule allows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
        .message("min must not be greater than max"),
    validation = Rule::new("!((has(self.min) || has(self.max)) && (has(self.glob) || has(self.__in__) || has(self.regex) || has(self.prefix) || has(self.maxLength)))")
        .message("min and max constrain a number; glob, in, regex, prefix and maxLength a string: not both on one argument"),
)]
pub struct ArgumentConstraint {
    /// Path globs, one of which the value must match after normalisation: `/` separates
    /// segments, `*` is any run of characters within a segment, `**` any number of segments.
    /// May name the caller (`/home/{subject}/**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 512),
            regex(pattern = r"^/?([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))*$")
        )
    )]
    pub glob: Vec<String>,
    /// Exact values, one of which the value must equal (strings only). May name the caller.
    #[serde(default, rename = "in", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub in_: Vec<String>,
    /// A regular expression the whole value must match (anchored at both ends; RE2 syntax,
    /// linear time: no backreferences or look-around). Matched against the value as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub regex: Option<String>,
    /// Prefixes, one of which the value must start with, as sent and percent-decoded; a value
    /// with a `..` segment never matches. Prefer `glob` for paths:
    /// `/data/pub` is a prefix of `/data/public`. May name the caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub prefix: Vec<String>,
    /// Least number allowed (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Number>,
    /// Greatest number allowed (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Number>,
    /// Most characters a string value may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1048576))]
    pub max_length: Option<i32>,
    /// Whether the call must carry the argument (the default). With `false` a call without it
    /// (or with `null`) passes, and a present value must still satisfy the constraints.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    #[schemars(default = "yes")]
    pub required: bool,
}

impl ArgumentConstraint {
    /// Whether `min` or `max` is given (the value must be a number).
    pub fn is_numeric(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    /// Whether a string constraint is given (the value must be a string).
    pub fn is_textual(&self) -> bool {
        !self.glob.is_empty()
            || !self.in_.is_empty()
            || self.regex.is_some()
            || !self.prefix.is_empty()
            || self.max_length.is_some()
    }
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
}

/// Which constraint of an argument failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    /// The argument is required and absent (or `null`).
    Missing,
    /// The value is not a string where a string constraint applies.
    NotAString,
    /// The value is not a number where `min`/`max` apply.
    NotANumber,
    /// The value matches none of the globs.
    Glob,
    /// The value is none of the `in` values.
    In,
    /// The value does not match the regex.
    Regex,
    /// The value starts with none of the prefixes.
    Prefix,
    /// The value is below `min`.
    Min,
    /// The value is above `max`.
    Max,
    /// The value is longer than `maxLength`.
    MaxLength,
}

impl Violation {
    /// The constraint's field name (`glob`, `in`, ...; `required` for a missing argument, `type`
    /// for a mistyped one).
    pub fn constraint(self) -> &'static str {
        match self {
            Self::Missing => "required",
            Self::NotAString | Self::NotANumber => "type",
            Self::Glob => "glob",
            Self::In => "in",
            Self::Regex => "regex",
            Self::Prefix => "prefix",
            Self::Min => "min",
            Self::Max => "max",
            Self::MaxLength => "maxLength",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "is required and missing",
            Self::NotAString => "must be a string (or an array of strings)",
            Self::NotANumber => "must be a number (or an array of numbers)",
            Self::Glob => "matches none of the allowed globs",
            Self::In => "is none of the allowed values",
            Self::Regex => "does not match the allowed pattern",
            Self::Prefix => "starts with none of the allowed prefixes",
            Self::Min => "is below the allowed minimum",
            Self::Max => "is above the allowed maximum",
            Self::MaxLength => "is longer than allowed",
        })
    }
}

/// Why a call's arguments do not satisfy a rule: the argument and the constraint, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgumentFailure<'p> {
    /// The argument's name (as the rule names it).
    pub argument: &'p str,
    /// The constraint it failed.
    pub violation: Violation,
}

impl fmt::Display for ArgumentFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument {:?} {}", self.argument, self.violation)
    }
}

/// What a caller-dependent pattern may name, from the caller's identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The subject.
    pub subject: Option<&'a str>,
    /// The groups.
    pub groups: &'a [String],
    /// The service account as `namespace/name`.
    pub service_account: Option<&'a str>,
    /// Token claims rules may name (`{claims.NAME}`), each with its string values.
    pub claims: &'a [(String, Vec<String>)],
}

/// Most values of one claim a caller brings to argument rules; further values are not read (a
/// pattern then matches fewer values, never more).
pub const MAX_CLAIM_VALUES: usize = 64;

/// Longest claim name a pattern may name.
pub const MAX_CLAIM_NAME: usize = 128;

/// Whether `name` may follow `claims.` in a caller variable: 1 to [`MAX_CLAIM_NAME`] ASCII
/// letters, digits and `_ - . :` (no `/`, which separates the segments of a glob).
pub fn is_claim_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CLAIM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// A variable a pattern may name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Subject,
    Group,
    ServiceAccountNamespace,
    ServiceAccountName,
    Claim(String),
}

impl Var {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "subject" => Self::Subject,
            "group" => Self::Group,
            "serviceAccount.namespace" => Self::ServiceAccountNamespace,
            "serviceAccount.name" => Self::ServiceAccountName,
            _ => match name.strip_prefix("claims.") {
                Some(claim) if is_claim_name(claim) => Self::Claim(claim.to_owned()),
                _ => return None,
            },
        })
    }

    /// The caller's safe values of this variable.
    fn values<'a>(&self, caller: &Caller<'a>) -> Vec<&'a str> {
        let account = caller.service_account.and_then(|sa| sa.split_once('/'));
        let values: Vec<&'a str> = match self {
            Self::Subject => caller.subject.into_iter().collect(),
            Self::Group => caller.groups.iter().map(String::as_str).collect(),
            Self::ServiceAccountNamespace => account.map(|(ns, _)| ns).into_iter().collect(),
            Self::ServiceAccountName => account.map(|(_, name)| name).into_iter().collect(),
            Self::Claim(claim) => caller
                .claims
                .iter()
                .filter(|(name, _)| name == claim)
                .flat_map(|(_, values)| values.iter().take(MAX_CLAIM_VALUES).map(String::as_str))
                .collect(),
        };
        values.into_iter().filter(|v| is_safe_value(v)).collect()
    }
}

mod schema;

pub use schema::{NARROWED_META_KEY, narrow};

/// Whether a caller value may be substituted into a pattern: one plain path segment.
fn is_safe_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '*' | '{' | '}' | '%'))
}

/// A pattern as written, split into literal text and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err("'}' without '{'; write a caller variable as {subject}".into());
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("'{' without '}'; write a caller variable as {subject}".into());
            };
            let name = &rest[open + 1..open + close];
            let var = Var::parse(name).ok_or_else(|| {
                format!(
                    "unknown caller variable {{{name}}}; known are {{subject}}, {{group}}, {{serviceAccount.namespace}}, {{serviceAccount.name}} and {{claims.NAME}} (NAME of ASCII letters, digits and _-.:)"
                )
            })?;
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            pieces.push(Piece::Var(var));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    fn literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Every text this template stands for, for `caller` (none when the caller lacks a value).
    fn expand(&self, caller: &Caller<'_>) -> Vec<String> {
        let mut out = vec![String::new()];
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.iter_mut().for_each(|o| o.push_str(text)),
                Piece::Var(var) => {
                    let values = var.values(caller);
                    out = out
                        .iter()
                        .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                        .take(MAX_EXPANSIONS)
                        .collect();
                }
            }
        }
        out
    }
}

/// What type of value a constraint constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// `min`/`max`: a number.
    Number,
    /// `glob`, `in`, `regex`, `prefix`, `maxLength`: a string.
    String,
    /// Only `required`: any present value.
    Any,
}

/// A compiled argument constraint.
#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    kind: ValueKind,
    globs: Vec<Template>,
    in_: Vec<Template>,
    regex: Option<regex::Regex>,
    prefix: Vec<Template>,
    min: Option<f64>,
    max: Option<f64>,
    max_length: Option<u32>,
    required: bool,
}

/// The argument constraints of one rule, compiled: build once per policy.
#[derive(Debug, Clone, Default)]
pub struct ArgumentRules {
    arguments: Vec<Compiled>,
}

/// A problem with one field of an argument constraint: its path below the constraint, and what is
/// wrong.
pub type ConstraintProblem = (String, String);

/// Checks the constraints of a rule whose `arguments` field is at path `at`, with the full path
/// of each problem (`at` empty: paths below `arguments`).
pub fn check(arguments: &BTreeMap<String, ArgumentConstraint>, at: &str) -> Vec<ConstraintProblem> {
    let problems = ArgumentRules::compile(arguments).err().unwrap_or_default();
    problems
        .into_iter()
        .map(|(path, message)| {
            let full = match (at.is_empty(), path.is_empty()) {
                (true, _) => path,
                (false, true) => at.to_owned(),
                (false, false) => format!("{at}.{path}"),
            };
            (full, message)
        })
        .collect()
}

/// A regex compiled anchored, with bounded size.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("a regex must be at most {MAX_PATTERN_LEN} characters"));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(32)
        .build()
        .map_err(|e| {
            format!(
                "the regex does not compile: {}",
                e.to_string().lines().last().unwrap_or_default().trim()
            )
        })
}

/// Checks a glob as written: normal form, `**` only as a whole segment, known caller variables.
fn parse_glob(glob: &str) -> Result<Template, String> {
    if glob.is_empty() {
        return Err("a glob must not be empty".into());
    }
    if glob.len() > MAX_PATTERN_LEN {
        return Err(format!("a glob must be at most {MAX_PATTERN_LEN} characters"));
    }
    if glob.chars().any(char::is_control) {
        return Err("a glob must not contain control characters".into());
    }
    let body = glob.strip_prefix('/').unwrap_or(glob);
    for segment in body.split('/') {
        match segment {
            "" => return Err("a glob must not have an empty segment ('//' or a trailing '/')".into()),
            "." | ".." => return Err("a glob must not have a '.' or '..' segment: write it in normal form".into()),
            "**" => {}
            s if s.contains("**") => {
                return Err("'**' must be a whole segment ('/data/**'); '*' matches within a segment".into());
            }
            _ => {}
        }
    }
    Template::parse(glob)
}

fn parse_values(values: &[String], what: &str, path: &str, problems: &mut Vec<ConstraintProblem>) -> Vec<Template> {
    let most = if what == "in" { MAX_VALUES } else { MAX_PATTERNS };
    if values.len() > most {
        problems.push((path.to_owned(), format!("at most {most} {what} values")));
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            let parsed = if value.len() > MAX_PATTERN_LEN {
                Err(format!("at most {MAX_PATTERN_LEN} characters"))
            } else if what == "glob" {
                parse_glob(value)
            } else if what == "prefix" && value.is_empty() {
                Err("a prefix must not be empty".into())
            } else {
                Template::parse(value)
            };
            parsed.map_err(|e| problems.push((format!("{path}[{i}]"), e))).ok()
        })
        .collect()
}

impl ArgumentRules {
    /// Compiles `arguments`, or says what is wrong with each, by path below `arguments`.
    pub fn compile(arguments: &BTreeMap<String, ArgumentConstraint>) -> Result<Self, Vec<ConstraintProblem>> {
        let mut problems = Vec::new();
        if arguments.len() > MAX_ARGUMENTS {
            problems.push((
                String::new(),
                format!("a rule may constrain at most {MAX_ARGUMENTS} arguments"),
            ));
        }
        let mut compiled = Vec::with_capacity(arguments.len());
        for (name, constraint) in arguments {
            let path = |field: &str| format!("{name}.{field}");
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                problems.push((
                    name.clone(),
                    "an argument name must be 1 to 128 characters without control characters".into(),
                ));
            }
            let globs = parse_values(&constraint.glob, "glob", &path("glob"), &mut problems);
            let in_ = parse_values(&constraint.in_, "in", &path("in"), &mut problems);
            let prefix = parse_values(&constraint.prefix, "prefix", &path("prefix"), &mut problems);
            let regex = constraint
                .regex
                .as_deref()
                .and_then(|r| compile_regex(r).map_err(|e| problems.push((path("regex"), e))).ok());
            let number = |n: &Option<Number>, field: &str, problems: &mut Vec<ConstraintProblem>| {
                n.as_ref().and_then(|n| match n.as_f64() {
                    Some(f) if f.is_finite() => Some(f),
                    _ => {
                        problems.push((path(field), "must be a finite number".into()));
                        None
                    }
                })
            };
            if constraint.max_length.is_some_and(|m| m < 0) {
                problems.push((path("maxLength"), "maxLength must not be negative".into()));
            }
            let min = number(&constraint.min, "min", &mut problems);
            let max = number(&constraint.max, "max", &mut problems);
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                problems.push((path("min"), "min must not be greater than max".into()));
            }
            let (numeric, textual) = (constraint.is_numeric(), constraint.is_textual());
            if numeric && textual {
                problems.push((
                    name.clone(),
                    "min and max constrain a number; glob, in, regex, prefix and maxLength a string: not both on one argument".into(),
                ));
            }
            if !numeric && !textual && !constraint.required {
                problems.push((
                    name.clone(),
                    "the constraint allows every value: give glob, in, regex, prefix, min, max or maxLength, or leave required at true".into(),
                ));
            }
            compiled.push(Compiled {
                name: name.clone(),
                kind: if numeric {
                    ValueKind::Number
                } else if textual {
                    ValueKind::String
                } else {
                    ValueKind::Any
                },
                globs,
                in_,
                regex,
                prefix,
                min,
                max,
                max_length: constraint.max_length.map(|m| u32::try_from(m).unwrap_or(0)),
                required: constraint.required,
            });
        }
        if problems.is_empty() {
            Ok(Self { arguments: compiled })
        } else {
            Err(problems)
        }
    }

    /// The token claims these constraints name (`{claims.NAME}`).
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.arguments
            .iter()
            .flat_map(|c| c.globs.iter().chain(&c.in_).chain(&c.prefix))
            .flat_map(|t| &t.pieces)
            .filter_map(|piece| match piece {
                Piece::Var(Var::Claim(name)) => Some(name.as_str()),
                _ => None,
            })
    }

    /// Whether the rule constrains no argument.
    pub fn is_empty(&self) -> bool {
        self.arguments.is_empty()
    }

    /// Whether some arguments would satisfy these constraints for `caller`: false when a list of
    /// caller-dependent values of a required argument expands to nothing (the caller has no
    /// subject, no group, ...); an argument that is not required can be left out.
    pub fn satisfiable(&self, caller: &Caller<'_>) -> bool {
        self.arguments.iter().all(|c| {
            !c.required
                || [&c.globs, &c.in_, &c.prefix]
                    .into_iter()
                    .all(|list| list.is_empty() || list.iter().any(|t| !t.expand(caller).is_empty()))
        })
    }

    /// Checks a call's `arguments` (none: an empty object) for `caller`: the first argument that
    /// fails, with the constraint it fails.
    pub fn check<'p>(
        &'p self,
        arguments: Option<&Map<String, Value>>,
        caller: &Caller<'_>,
    ) -> Result<(), ArgumentFailure<'p>> {
        for constraint in &self.arguments {
            let fail = |violation| ArgumentFailure {
                argument: &constraint.name,
                violation,
            };
            match arguments.and_then(|a| a.get(&constraint.name)) {
                None | Some(Value::Null) if constraint.required => return Err(fail(Violation::Missing)),
                // An empty array has no value to satisfy the constraint with.
                Some(Value::Array(items)) if items.is_empty() && constraint.required => {
                    return Err(fail(Violation::Missing));
                }
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        constraint.check_value(item, caller).map_err(fail)?;
                    }
                }
                Some(value) => constraint.check_value(value, caller).map_err(fail)?,
            }
        }
        Ok(())
    }
}

impl Compiled {
    fn check_value(&self, value: &Value, caller: &Caller<'_>) -> Result<(), Violation> {
        if self.kind == ValueKind::Number {
            let Some(n) = value.as_f64() else {
                return Err(Violation::NotANumber);
            };
            if self.min.is_some_and(|min| n < min) {
                return Err(Violation::Min);
            }
            if self.max.is_some_and(|max| n > max) {
                return Err(Violation::Max);
            }
            return Ok(());
        }
        if self.kind == ValueKind::Any {
            return Ok(());
        }
        let Some(text) = value.as_str() else {
            return Err(Violation::NotAString);
        };
        if self.max_length.is_some_and(|max| text.chars().count() > max as usize) {
            return Err(Violation::MaxLength);
        }
        if !self.in_.is_empty() && !any_expansion(&self.in_, caller, |v| v == text) {
            return Err(Violation::In);
        }
        if let Some(regex) = &self.regex
            && !regex.is_match(text)
        {
            return Err(Violation::Regex);
        }
        if self.globs.is_empty() && self.prefix.is_empty() {
            return Ok(());
        }
        let readings = readings(text);
        if !self.globs.is_empty()
            && !readings.as_ref().is_some_and(|r| {
                r.iter()
                    .map(|reading| normalize_path(reading))
                    .all(|path| any_expansion(&self.globs, caller, |g| glob_matches(g, &path)))
            })
        {
            return Err(Violation::Glob);
        }
        if !self.prefix.is_empty()
            && !readings.as_ref().is_some_and(|r| {
                r.iter()
                    .all(|text| !climbs(text) && any_expansion(&self.prefix, caller, |p| text.starts_with(p)))
            })
        {
            return Err(Violation::Prefix);
        }
        Ok(())
    }
}

/// Whether some expansion of some template satisfies `test` (literal templates without
/// allocation).
fn any_expansion(templates: &[Template], caller: &Caller<'_>, test: impl Fn(&str) -> bool) -> bool {
    templates.iter().any(|t| match t.literal() {
        Some(text) => test(text),
        None => t.expand(caller).iter().any(|text| test(text)),
    })
}

/// The two readings of a value that `glob` and `prefix` check: as sent, and percent-decoded
/// (repeatedly) with `\\` read as `/`. None when the value cannot be read safely (control
/// characters, bytes that are not UTF-8, still encoded after [`MAX_DECODE_ROUNDS`] rounds): it
/// matches nothing.
pub fn readings(text: &str) -> Option<[String; 2]> {
    if text.chars().any(char::is_control) {
        return None;
    }
    let mut decoded = text.to_owned();
    let mut rounds = 0;
    while let Some(next) = percent_decode(&decoded)? {
        rounds += 1;
        if rounds > MAX_DECODE_ROUNDS {
            return None;
        }
        decoded = next;
    }
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let decoded = decoded.replace('\\', "/");
    Some([text.to_owned(), decoded])
}

/// Whether a reading has a `..` segment (a prefix never allows one).
fn climbs(reading: &str) -> bool {
    reading.split('/').any(|segment| segment == "..")
}

/// `text` with `%XX` sequences decoded, or None when it has none; Err (outer None) when the
/// bytes are not UTF-8.
fn percent_decode(text: &str) -> Option<Option<String>> {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            changed = true;
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if !changed {
        return Some(None);
    }
    String::from_utf8(out).ok().map(Some)
}

/// Lexical normalisation of a `/`-separated path: no empty or `.` segments, `..` resolved (kept
/// at the start of a relative path, dropped at the root), no trailing `/`. An absolute path stays
/// absolute.
pub fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match segments.last() {
                Some(&last) if last != ".." => {
                    segments.pop();
                }
                _ if absolute => {}
                _ => segments.push(".."),
            },
            s => segments.push(s),
        }
    }
    let joined = segments.join("/");
    if absolute { format!("/{joined}") } else { joined }
}

/// Whether normalised `path` matches `glob` (`*` within a segment, `**` across segments).
pub fn glob_matches(glob: &str, path: &str) -> bool {
    if glob.starts_with('/') != path.starts_with('/') {
        return false;
    }
    fn segments(s: &str) -> Vec<&str> {
        s.split('/').filter(|seg| !seg.is_empty()).collect()
    }
    // `**` over segments as `*` over characters, each segment matched as a `*` glob.
    crate::tool_match::star_match_by(
        &segments(glob),
        &segments(path),
        |segment| *segment == "**",
        |pattern, text| crate::tool_match::star_match(pattern.as_bytes(), text.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(yaml: &str) -> ArgumentRules {
        let arguments: BTreeMap<String, ArgumentConstraint> = yaml_serde::from_str(yaml).unwrap();
        ArgumentRules::compile(&arguments).unwrap()
    }

    fn problems(yaml: &str) -> Vec<ConstraintProblem> {
        let arguments: BTreeMap<String, ArgumentConstraint> = yaml_serde::from_str(yaml).unwrap();
        check(&arguments, "")
    }

    fn call(rules: &ArgumentRules, args: Value) -> Result<(), (String, Violation)> {
        let caller = Caller::default();
        rules
            .check(args.as_object(), &caller)
            .map_err(|f| (f.argument.to_owned(), f.violation))
    }

    #[test]
    fn paths_are_normalised_before_matching() {
        assert_eq!(normalize_path("/data/public/../secret"), "/data/secret");
        assert_eq!(normalize_path("/data//public/./a.txt/"), "/data/public/a.txt");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path("a/../../etc"), "../etc");
        assert_eq!(normalize_path("./a"), "a");
        let public = rules("path: {glob: [\"/data/public/**\"]}");
        for allowed in [
            "/data/public",
            "/data/public/",
            "/data/public/a.txt",
            "/data//public/./sub/b.txt",
            "/data/public/sub/../a.txt",
            "/data/public/a%20b.txt",
        ] {
            assert_eq!(call(&public, json!({"path": allowed})), Ok(()), "{allowed}");
        }
        for denied in [
            "/data/public/../secret",
            "/data/public/../secret/x",
            "/data/public/%2e%2e/secret",
            "/data/public/%2E%2E%2Fsecret",
            "/data/public/..%2fsecret",
            "/data/public/%252e%252e/secret",
            "/data/public/..\\secret",
            "/data/public/%5c..%5csecret/x",
            "/data/publicity/a",
            "/DATA/public/a",
            "/data/Public/a",
            "/etc/passwd",
            "data/public/a",
            "../data/public/a",
            "/data/public/a\u{0}b",
            "/data/public/%00",
            "/data/public/%ff",
            "/data/public/%25252525252e",
        ] {
            assert_eq!(
                call(&public, json!({"path": denied})),
                Err(("path".into(), Violation::Glob)),
                "{denied}"
            );
        }
    }

    #[test]
    fn globs_match_segments_and_runs_within_them() {
        assert!(glob_matches("/data/*/a.txt", "/data/x/a.txt"));
        assert!(!glob_matches("/data/*/a.txt", "/data/x/y/a.txt"));
        assert!(glob_matches("/data/**/a.txt", "/data/x/y/a.txt"));
        assert!(glob_matches("/data/**/a.txt", "/data/a.txt"));
        assert!(glob_matches("team-a-*", "team-a-prod"));
        assert!(!glob_matches("team-a-*", "team-b-prod"));
        assert!(!glob_matches("team-a-*", "/team-a-prod"));
        assert!(glob_matches("**", "anything/at/all"));
        assert!(glob_matches("/**", "/"));
    }

    #[test]
    fn adversarial_globs_and_regexes_stay_fast() {
        let many = "/a".repeat(2000);
        let glob = format!("{}/b", "/**/a".repeat(20));
        let started = std::time::Instant::now();
        assert!(!glob_matches(&glob, &many));
        let regex = compile_regex("(a+)+b").unwrap();
        assert!(!regex.is_match(&"a".repeat(100_000)));
        let star = "*a".repeat(50);
        assert!(!crate::tool_match::star_match(
            star.as_bytes(),
            format!("{}b", "a".repeat(5000)).as_bytes()
        ));
        // Generous: quadratic at worst, never exponential.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn every_kind_of_constraint_decides_and_names_itself() {
        let r = rules(
            r#"
namespace: {in: [default, kube-public]}
ticket: {regex: "[A-Z]+-[0-9]+", maxLength: 12}
limit: {min: 1, max: 100, required: false}
url: {prefix: ["https://docs.example.com/"]}
"#,
        );
        let ok = json!({"namespace": "default", "ticket": "OPS-12", "limit": 5, "url": "https://docs.example.com/a"});
        assert_eq!(call(&r, ok.clone()), Ok(()));
        let with = |key: &str, value: Value| {
            let mut args = ok.clone();
            args[key] = value;
            call(&r, args)
        };
        assert_eq!(
            with("namespace", json!("kube-system")),
            Err(("namespace".into(), Violation::In))
        );
        assert_eq!(
            with("namespace", json!(1)),
            Err(("namespace".into(), Violation::NotAString))
        );
        assert_eq!(
            with("ticket", json!("ops-12")),
            Err(("ticket".into(), Violation::Regex))
        );
        assert_eq!(
            with("ticket", json!("OPS-12\n")),
            Err(("ticket".into(), Violation::Regex))
        );
        assert_eq!(
            with("ticket", json!("OPS-1234567890")),
            Err(("ticket".into(), Violation::MaxLength))
        );
        assert_eq!(with("limit", json!(0)), Err(("limit".into(), Violation::Min)));
        assert_eq!(with("limit", json!(100.5)), Err(("limit".into(), Violation::Max)));
        assert_eq!(with("limit", json!("5")), Err(("limit".into(), Violation::NotANumber)));
        assert_eq!(with("limit", Value::Null), Ok(()));
        assert_eq!(
            with("url", json!("https://docs.example.com.evil/")),
            Err(("url".into(), Violation::Prefix))
        );
        assert_eq!(
            with("namespace", Value::Null),
            Err(("namespace".into(), Violation::Missing))
        );
        let mut missing = ok.as_object().unwrap().clone();
        missing.remove("ticket");
        assert_eq!(
            call(&r, Value::Object(missing)),
            Err(("ticket".into(), Violation::Missing))
        );
        assert_eq!(call(&r, Value::Null), Err(("namespace".into(), Violation::Missing)));
        // Arrays: every element.
        let paths = rules("paths: {glob: [\"/data/public/**\"]}");
        assert_eq!(
            call(&paths, json!({"paths": ["/data/public/a", "/data/public/b"]})),
            Ok(())
        );
        assert_eq!(
            call(&paths, json!({"paths": ["/data/public/a", "/data/secret"]})),
            Err(("paths".into(), Violation::Glob))
        );
        assert_eq!(
            call(&paths, json!({"paths": [["/data/public/a"]]})),
            Err(("paths".into(), Violation::NotAString))
        );
        // An empty array gives a required argument no value; an optional one may be empty.
        assert_eq!(
            call(&paths, json!({"paths": []})),
            Err(("paths".into(), Violation::Missing))
        );
        let optional = rules("paths: {glob: [\"/data/public/**\"], required: false}");
        assert_eq!(call(&optional, json!({"paths": []})), Ok(()));
    }

    #[test]
    fn caller_values_are_substituted_literally_and_only_when_safe() {
        let r = rules("namespace: {glob: [\"team-{group}-*\"]}\nhome: {glob: [\"/home/{subject}/**\"]}");
        let groups = vec!["a".to_owned(), "b*".to_owned(), "..".to_owned()];
        let caller = Caller {
            subject: Some("alice"),
            groups: &groups,
            ..Caller::default()
        };
        let check = |args: Value| r.check(args.as_object(), &caller).map_err(|f| f.violation);
        assert_eq!(
            check(json!({"namespace": "team-a-prod", "home": "/home/alice/x"})),
            Ok(())
        );
        // "b*" and ".." are not safe values: never substituted.
        assert_eq!(
            check(json!({"namespace": "team-b*-prod", "home": "/home/alice"})),
            Err(Violation::Glob)
        );
        assert_eq!(
            check(json!({"namespace": "team-bx-prod", "home": "/home/alice"})),
            Err(Violation::Glob)
        );
        assert_eq!(
            check(json!({"namespace": "team-a-prod", "home": "/home/bob/x"})),
            Err(Violation::Glob)
        );
        assert!(r.satisfiable(&caller));
        let nobody = Caller::default();
        assert!(!r.satisfiable(&nobody));
        assert_eq!(
            r.check(json!({"namespace": "team--x", "home": "/home//x"}).as_object(), &nobody)
                .map_err(|f| f.violation),
            Err(Violation::Glob)
        );
        let sa = rules("ns: {in: [\"{serviceAccount.namespace}\"]}");
        let caller = Caller {
            service_account: Some("team-a/agent"),
            ..Caller::default()
        };
        assert_eq!(sa.check(json!({"ns": "team-a"}).as_object(), &caller), Ok(()));
        assert!(sa.check(json!({"ns": "team-b"}).as_object(), &caller).is_err());
    }

    #[test]
    fn token_claims_are_caller_values_when_safe() {
        let r = rules("project: {in: [\"{claims.team}\"]}\npath: {glob: [\"/data/{claims.example.com:org}/**\"]}");
        assert_eq!(r.claim_names().collect::<Vec<_>>(), ["example.com:org", "team"]);
        let claims = vec![
            ("example.com:org".to_owned(), vec!["acme".to_owned()]),
            (
                "team".to_owned(),
                vec!["..".to_owned(), "ops".to_owned(), "a/b".to_owned()],
            ),
        ];
        let caller = Caller {
            claims: &claims,
            ..Caller::default()
        };
        let check = |args: Value| r.check(args.as_object(), &caller).map_err(|f| f.violation);
        assert_eq!(check(json!({"project": "ops", "path": "/data/acme/x"})), Ok(()));
        // Values that are not one safe segment are never substituted.
        assert_eq!(
            check(json!({"project": "a/b", "path": "/data/acme/x"})),
            Err(Violation::In)
        );
        assert_eq!(
            check(json!({"project": "..", "path": "/data/acme/x"})),
            Err(Violation::In)
        );
        assert_eq!(
            check(json!({"project": "ops", "path": "/data/other/x"})),
            Err(Violation::Glob)
        );
        // A caller without the claim gets nothing from the pattern.
        assert!(!r.satisfiable(&Caller::default()));
        assert!(
            problems("x: {in: [\"{claims.}\"]}")[0]
                .1
                .contains("unknown caller variable {claims.}")
        );
        assert!(
            problems("x: {in: [\"{claims.a b}\"]}")[0]
                .1
                .contains("unknown caller variable")
        );
    }

    #[test]
    fn bad_constraints_are_refused_with_their_path() {
        let cases = [
            ("path: {glob: [\"/data//x\"]}", "path.glob[0]", "empty segment"),
            ("path: {glob: [\"/data/\"]}", "path.glob[0]", "empty segment"),
            ("path: {glob: [\"/data/../x\"]}", "path.glob[0]", "'..' segment"),
            ("path: {glob: [\"/data/a**\"]}", "path.glob[0]", "whole segment"),
            (
                "path: {glob: [\"/home/{user}\"]}",
                "path.glob[0]",
                "unknown caller variable {user}",
            ),
            ("path: {glob: [\"/home/{subject\"]}", "path.glob[0]", "'{' without '}'"),
            ("t: {regex: \"(a\"}", "t.regex", "does not compile"),
            ("t: {regex: \"(a)\\\\1\"}", "t.regex", "does not compile"),
            ("n: {min: 5, max: 1}", "n.min", "min must not be greater than max"),
            ("n: {min: 1, glob: [\"a\"]}", "n", "not both"),
            ("n: {required: false}", "n", "allows every value"),
            ("n: {prefix: [\"\"]}", "n.prefix[0]", "must not be empty"),
        ];
        for (yaml, path, message) in cases {
            let found = problems(yaml);
            assert!(
                found.iter().any(|(p, m)| p == path && m.contains(message)),
                "{yaml}: {found:?}"
            );
        }
        let huge = format!("t: {{regex: \"{}\"}}", "a{1000}{1000}");
        assert!(problems(&huge).iter().any(|(p, _)| p == "t.regex"));
    }
}
