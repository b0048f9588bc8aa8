//! The error type of validation: a list of problems, each with the object and field path it is
//! about, so that a person can find and fix every one of them in a single pass.

use std::fmt;

/// One thing wrong with an input, e.g. `team-a/access: spec.roles[2].scopes[0]: malformed wildcard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object the problem is in (`McpAccessPolicy team-a/access`), if not the document itself.
    pub object: Option<String>,
    /// Field path inside the object, e.g. `spec.roles[2].scopes[0]`.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl Problem {
    /// A problem at `path` of `object`.
    pub fn new(object: Option<&str>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            object: object.map(str::to_owned),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NB: a problem of a whole object or of the document itself has an empty path; it is left
        // out rather than printed as `object: : message`.
        for part in [self.object.as_deref(), Some(self.path.as_str())].into_iter().flatten() {
            if !part.is_empty() {
                write!(f, "{part}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one validation pass; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, object: Option<&str>, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(object, path, message));
    }

    /// `Err(self)` when any problem was recorded.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_path_or_object_is_left_out() {
        let cases = [
            (
                Some("McpServer a/s"),
                "spec.tools[0]",
                "McpServer a/s: spec.tools[0]: wrong",
            ),
            (
                Some("compiled policy of McpServer a/s"),
                "",
                "compiled policy of McpServer a/s: wrong",
            ),
            (None, "roles[0]", "roles[0]: wrong"),
            (None, "", "wrong"),
        ];
        for (object, path, expected) in cases {
            assert_eq!(Problem::new(object, path, "wrong").to_string(), expected);
        }
    }
}
