//! Errors of the reconcile steps, one enum per step, each variant named after the action that
//! failed, and the [`error_policy`](super::error_policy) split between them: an invalid spec
//! waits for a change; an API error is transient and retried with back-off.

use crate::validate::ValidateError;

/// The dereference step could not read an object the McpServer names.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    /// Reading a ConfigMap of `spec.documents` failed (other than "not found").
    #[error("cannot read ConfigMap {namespace}/{name}: {source}")]
    GetConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading a Secret of `spec.auth` failed (other than "not found").
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    GetSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// The apply step failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A server-side apply of one child was refused or did not complete.
    #[error("cannot apply {kind} {namespace}/{name}: {source}")]
    ApplyChild {
        /// Kind of the child.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading a child (the policy ConfigMap in force, kept while new policies are invalid)
    /// failed.
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    ReadChild {
        /// Kind of the child.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Listing the children of one kind (to delete those no longer wanted) failed.
    #[error("cannot list {kind}s of McpServer {namespace}/{server}: {source}")]
    ListChildren {
        /// Kind of the children.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// The McpServer.
        server: String,
        /// The API error.
        source: kube::Error,
    },
    /// Deleting a child that is no longer wanted failed.
    #[error("cannot delete {kind} {namespace}/{name}: {source}")]
    DeleteChild {
        /// Kind of the child.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// The status step failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Writing `status` failed.
    #[error("cannot write the status of {kind} {namespace}/{name}: {source}")]
    PatchStatus {
        /// `McpServer` or `McpAccessPolicy`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Why one reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no name or namespace (never true of an object read from the API server).
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    /// A reflector store never became ready (its watch stopped).
    #[error("the cache of {0} is not available")]
    CacheUnavailable(&'static str),
    /// Dereference step.
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    /// Validate step: the spec (or a policy that binds the server) is invalid. Retrying cannot
    /// help; the status and a Warning event say what to change.
    #[error(transparent)]
    Validate(#[from] ValidateError),
    /// Apply step.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Status step.
    #[error(transparent)]
    Status(#[from] StatusError),
}

impl Error {
    /// Whether a retry can help: `false` for an invalid spec, which waits for the next change.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Validate(_) | Self::MissingMetadata(_))
    }

    /// A short, stable label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "missing_metadata",
            Self::CacheUnavailable(_) => "cache",
            Self::Dereference(_) => "dereference",
            Self::Validate(_) => "invalid_spec",
            Self::Apply(_) => "apply",
            Self::Status(_) => "status",
        }
    }
}
