//! A tool's advertised `inputSchema`, narrowed to what a caller's argument rules accept.
//!
//! What JSON Schema can say exactly is said: `in` → `enum`, `min`/`max` → `minimum`/`maximum`,
//! `maxLength`, `required`, and the value's `type`. A `glob` becomes a `pattern` that admits the
//! paths in normal form that match it (no empty, `.` or `..` segment, no trailing `/`, no `%`,
//! `\` or control character): every value the pattern admits is accepted, while the evaluator
//! also accepts other spellings of an accepted path (`/data//public/a`). `regex` and `prefix` are
//! not stated (an RE2 expression is not an ECMA-262 one, and "no `..` segment after a prefix" is
//! not a regular expression JSON Schema engines agree on); the mark in the tool's `_meta` names
//! them, so a client knows the schema is wider than the rules there.
//!
//! So a client that follows a narrowed schema is never denied for its arguments, except by a
//! `regex` or `prefix` the mark names. Caller values (`{subject}`, `{group}`) are substituted for
//! the caller the list is for.

use serde_json::{Map, Value, json};

use super::{ArgumentRules, Caller, Compiled, ValueKind};

/// The key of the mark in a narrowed tool's `_meta`.
pub const NARROWED_META_KEY: &str = "palisade.dev/argumentRules";

/// Characters a path segment in normal form may hold (besides those that make it `.` or `..`).
const SEGMENT_CHAR: &str = r"[^/%\\\x00-\x1F\x7F-\x9F]";
/// The same, without `.`.
const SEGMENT_CHAR_NOT_DOT: &str = r"[^./%\\\x00-\x1F\x7F-\x9F]";

/// One non-empty segment in normal form: not `.` or `..`.
fn any_segment() -> String {
    let (c, d) = (SEGMENT_CHAR, SEGMENT_CHAR_NOT_DOT);
    format!(r"(?:{d}{c}*|\.{d}{c}*|\.\.{c}+)")
}

/// `text` as an ECMA-262 (and Rust `regex`) literal: only syntax characters are escaped, since
/// an unneeded escape is an error under ECMA-262's `u` flag.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "^$\\.*+?()[]{}|/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The regular expression of one glob segment with `*`s, or None when it could match an empty,
/// `.` or `..` segment (other than a lone `*`): such a glob is left out, which narrows further.
fn segment(glob_segment: &str) -> Option<String> {
    if glob_segment == "*" {
        return Some(any_segment());
    }
    if !glob_segment.contains('*') {
        return Some(escape(glob_segment));
    }
    let could_be_dots = ["", ".", ".."]
        .iter()
        .any(|s| crate::tool_match::star_match(glob_segment.as_bytes(), s.as_bytes()));
    if could_be_dots {
        return None;
    }
    let pieces: Vec<String> = glob_segment.split('*').map(escape).collect();
    Some(pieces.join(&format!("{SEGMENT_CHAR}*")))
}

/// The regular expression (without anchors) of the paths in normal form that match `glob`, or
/// None when the glob is left out (see [`segment`]; a relative glob with `**`).
fn glob_regex(glob: &str) -> Option<String> {
    let absolute = glob.starts_with('/');
    let segments: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    if !absolute {
        let parts = segments
            .iter()
            .map(|s| if *s == "**" { None } else { segment(s) })
            .collect::<Option<Vec<_>>>()?;
        return (!parts.is_empty()).then(|| parts.join("/"));
    }
    if segments.iter().all(|s| *s == "**") {
        // `/` and `/**`: the root, or any absolute path.
        return Some(if segments.is_empty() {
            "/".into()
        } else {
            format!("/|(?:/{})+", any_segment())
        });
    }
    let mut out = String::new();
    for s in segments {
        if s == "**" {
            out.push_str(&format!("(?:/{})*", any_segment()));
        } else {
            out.push('/');
            out.push_str(&segment(s)?);
        }
    }
    Some(out)
}

/// How one argument's values are narrowed for a caller.
#[derive(Debug, Clone, PartialEq)]
struct ArgumentSchema<'a> {
    name: &'a str,
    required: bool,
    /// Keywords for the value (or each element of an array value).
    keywords: Map<String, Value>,
}

impl Compiled {
    /// The keywords of this constraint for `caller`, and the constraints they leave unstated.
    fn schema(&self, caller: &Caller<'_>, unstated: &mut Vec<&'static str>) -> ArgumentSchema<'_> {
        let mut keywords = Map::new();
        match self.kind {
            ValueKind::Number => {
                keywords.insert("type".into(), "number".into());
                if let Some(min) = self.min {
                    keywords.insert("minimum".into(), json!(min));
                }
                if let Some(max) = self.max {
                    keywords.insert("maximum".into(), json!(max));
                }
            }
            ValueKind::String => {
                keywords.insert("type".into(), "string".into());
                if let Some(max) = self.max_length {
                    keywords.insert("maxLength".into(), max.into());
                }
                if !self.in_.is_empty() {
                    let mut values: Vec<String> = self.in_.iter().flat_map(|t| t.expand(caller)).collect();
                    values.sort();
                    values.dedup();
                    keywords.insert("enum".into(), values.into());
                }
                if !self.globs.is_empty() {
                    let alternatives: Vec<String> = self
                        .globs
                        .iter()
                        .flat_map(|t| t.expand(caller))
                        .filter_map(|glob| glob_regex(&glob))
                        .collect();
                    if alternatives.is_empty() {
                        // No glob can be stated: no value is advertised as acceptable.
                        keywords.insert("not".into(), json!({}));
                    } else {
                        keywords.insert("pattern".into(), format!("^(?:{})$", alternatives.join("|")).into());
                    }
                }
                if self.regex.is_some() {
                    unstated.push("regex");
                }
                if !self.prefix.is_empty() {
                    unstated.push("prefix");
                }
            }
            ValueKind::Any => {}
        }
        ArgumentSchema {
            name: &self.name,
            required: self.required,
            keywords,
        }
    }
}

/// `keywords` applied to a property's schema: to its `items` when it is an array (which must
/// then have an item when the argument is `required`), else to the property itself; a keyword
/// the property already has is combined with `allOf`.
fn narrow_property(property: Option<&Value>, keywords: &Map<String, Value>, required: bool) -> Value {
    let Some(Value::Object(original)) = property else {
        return Value::Object(keywords.clone());
    };
    if original.get("type").and_then(Value::as_str) == Some("array") {
        let mut narrowed = original.clone();
        narrowed.insert("items".into(), narrow_property(original.get("items"), keywords, false));
        if required {
            let least = original.get("minItems").and_then(Value::as_u64).unwrap_or(0).max(1);
            narrowed.insert("minItems".into(), least.into());
        }
        return Value::Object(narrowed);
    }
    if keywords.keys().any(|k| original.contains_key(k)) {
        return json!({"allOf": [original, keywords]});
    }
    let mut narrowed = original.clone();
    narrowed.extend(keywords.clone());
    Value::Object(narrowed)
}

/// The sub-schema one rule's constraints make of `schema`'s properties.
fn alternative_schema(schema: &Map<String, Value>, arguments: &[ArgumentSchema<'_>]) -> Map<String, Value> {
    let properties = schema.get("properties").and_then(Value::as_object);
    let mut narrowed = Map::new();
    let mut required = Vec::new();
    for argument in arguments {
        let property = properties.and_then(|p| p.get(argument.name));
        narrowed.insert(
            argument.name.to_owned(),
            narrow_property(property, &argument.keywords, argument.required),
        );
        if argument.required {
            required.push(Value::from(argument.name));
        }
    }
    let mut out = Map::new();
    out.insert("properties".into(), Value::Object(narrowed));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    out
}

/// `schema` (a tool's `inputSchema`) narrowed to what one of `alternatives` (the argument rules
/// of the rules whose scopes the caller holds, every one constraining something) accepts for
/// `caller`, and the mark for the tool's `_meta`. One alternative is written into the properties;
/// several become an `anyOf`.
pub fn narrow(schema: &Value, alternatives: &[&ArgumentRules], caller: &Caller<'_>) -> (Value, Value) {
    let mut unstated = Vec::new();
    let per_rule: Vec<Vec<ArgumentSchema<'_>>> = alternatives
        .iter()
        .map(|rules| {
            rules
                .arguments
                .iter()
                .map(|c| c.schema(caller, &mut unstated))
                .collect()
        })
        .collect();
    unstated.sort_unstable();
    unstated.dedup();
    let original = schema.as_object().cloned().unwrap_or_default();
    let mut narrowed = original.clone();
    match per_rule.as_slice() {
        [only] => {
            let alternative = alternative_schema(&original, only);
            let properties = narrowed
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Some(properties), Some(Value::Object(new))) =
                (properties.as_object_mut(), alternative.get("properties"))
            {
                properties.extend(new.clone());
            }
            if let Some(Value::Array(new)) = alternative.get("required") {
                let required = narrowed.entry("required").or_insert_with(|| Value::Array(Vec::new()));
                if let Some(required) = required.as_array_mut() {
                    for name in new {
                        if !required.contains(name) {
                            required.push(name.clone());
                        }
                    }
                }
            }
        }
        several => {
            let any_of: Vec<Value> = several
                .iter()
                .map(|arguments| Value::Object(alternative_schema(&original, arguments)))
                .collect();
            if narrowed.contains_key("anyOf") {
                let all_of = narrowed.entry("allOf").or_insert_with(|| Value::Array(Vec::new()));
                if let Some(all_of) = all_of.as_array_mut() {
                    all_of.push(json!({"anyOf": any_of}));
                }
            } else {
                narrowed.insert("anyOf".into(), Value::Array(any_of));
            }
        }
    }
    let mark = json!({"narrowed": true, "unstated": unstated});
    (Value::Object(narrowed), mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_admit_normal_paths_that_match() {
        let re = |glob: &str| regex::Regex::new(&format!("^(?:{})$", glob_regex(glob).unwrap())).unwrap();
        let public = re("/data/public/**");
        for ok in [
            "/data/public",
            "/data/public/a.txt",
            "/data/public/x/.hidden",
            "/data/public/..a",
        ] {
            assert!(public.is_match(ok), "{ok}");
        }
        for bad in [
            "/data/public/",
            "/data/public/../secret",
            "/data/public/./a",
            "/data//public/a",
            "/data/public/%2e%2e/x",
            "/data/public/a\\b",
            "/data/publicx",
            "data/public/a",
            "/data/public/..",
        ] {
            assert!(!public.is_match(bad), "{bad}");
        }
        let names = re("public-*.md");
        assert!(names.is_match("public-faq.md"));
        assert!(!names.is_match("public-a/b.md"));
        assert!(!names.is_match("/public-faq.md"));
        assert!(re("/").is_match("/"));
        assert!(re("/**").is_match("/a/b"));
        assert!(!re("/**").is_match(""));
        // Segments that could be `.` or `..` are left out, relative `**` too.
        assert_eq!(glob_regex("/data/.*"), None);
        assert_eq!(glob_regex("docs/**"), None);
    }

    #[test]
    fn escaping_is_for_ecma_262_with_the_u_flag() {
        assert_eq!(escape("a-b_c#d~e"), "a-b_c#d~e");
        assert_eq!(
            escape("a.b(c)[d]{e}|f?g+h^i$j\\k/l"),
            r"a\.b\(c\)\[d\]\{e\}\|f\?g\+h\^i\$j\\k\/l"
        );
    }
}
