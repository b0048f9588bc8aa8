//! The one error type of the `policy` commands. Every message is printed to standard error as
//! `error: <message>`; the manifest and validation messages are those of `palisade-crds`, word
//! for word what `palisade-operator render` prints for the same files.

use std::path::PathBuf;

use palisade_crds::Problems;
use palisade_crds::document::DocumentError;
use palisade_crds::manifests::ManifestError;
use palisade_crds::verdicts::InvalidServers;

/// Why a `policy` command failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document is not YAML, not an object of its kind's shape, has unknown fields, or is a
    /// duplicate.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// McpServers that cannot be rolled out: invalid, or their policies' tests fail.
    #[error(transparent)]
    InvalidServers(#[from] InvalidServers),
    /// A compiled PolicyDocument among the files is not valid.
    #[error("{origin}: PolicyDocument: {problems}")]
    InvalidPolicyDocument {
        /// File and document number.
        origin: String,
        /// What is wrong.
        problems: Problems,
    },
    /// The files hold nothing the command reads.
    #[error("no McpServer, McpAccessPolicy or PolicyDocument among the files")]
    NothingToCheck,
    /// `explain --prompt` or `--resource` of a policy that defines tools of its own: prompts and
    /// resources are decided only in front of an upstream.
    #[error("prompts and resources are decided only on a server in front of an upstream; this policy serves documents")]
    NotAProxy,
    /// `compile` and `explain` work on exactly one McpServer.
    #[error("expected exactly one McpServer among the files, found {0}")]
    ServerCount(usize),
    /// A document collection's ConfigMap is not among the files (`compile --documents-dir`).
    #[error("ConfigMap {name:?} (collection {collection}) is not among the files")]
    MissingConfigMap {
        /// The ConfigMap.
        name: String,
        /// The collection it holds.
        collection: String,
    },
    /// A ConfigMap key or inline document name cannot be a document file name.
    #[error("collection {collection}: {name:?} is not a valid document name")]
    DocumentName {
        /// The collection.
        collection: String,
        /// The ConfigMap key or inline document name.
        name: String,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `--policy-file` is not a PolicyDocument.
    #[error("{}: {source}", path.display())]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: DocumentError,
    },
    /// `--policy-file` is a PolicyDocument that is not valid.
    #[error("{}: {problems}", path.display())]
    InvalidPolicyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problems: Problems,
    },
    /// `explain --token`: the token's claims cannot be read.
    #[error("cannot read the token's claims: {0}")]
    Token(String),
    /// `explain --claim` is not NAME=VALUE with a claim name rules can name.
    #[error("--claim {0:?}: expected NAME=VALUE, NAME of 1 to 128 ASCII letters, digits and _-.:")]
    Claim(String),
    /// `explain --args` is not a JSON object.
    #[error("--args must be a JSON object of the call's arguments, e.g. '{{\"path\": \"/data/a.txt\"}}': {0}")]
    Arguments(String),
    /// `explain`: the caller's source is not one of the server's, or is needed and not given.
    #[error("the caller's source: {0}")]
    CallerSource(String),
}
