//! Document collections: loading them from disk and answering the four tool actions (list, get,
//! search, read all) and MCP resource reads.
//!
//! Each collection is one directory `<root>/<collection>/` with one file per document, normally a
//! mounted ConfigMap (`key -> ..data/key`, `..data -> ..<timestamp>/`, all inside the directory).
//! [`DocumentStore::load`] reads every collection once, whole, into memory; the store is immutable
//! afterwards, so a reload builds a new store and swaps it in only if it loaded.
//!
//! What this module does:
//! - serves only regular files directly in a collection directory whose names are valid document
//!   names (1 to 253 characters from `A-Z a-z 0-9 . _ -`, not starting with `.`), whose content is
//!   UTF-8 and within [`DocumentLimits`], and which resolve (symlinks followed) to a file inside the
//!   collection directory. Anything else is skipped with a warning naming the file, never its target;
//! - answers lookups by map lookup after validating the name, so caller input never reaches a path;
//! - defines the one resource URI scheme, `palisade://<collection>/<percent-encoded name>`.
//!
//! What it deliberately does not do: decide who may read what (the policy evaluator does), recurse
//! into subdirectories, watch the file system (the caller reloads), read anything lazily after
//! loading, or serve binary content. Its error messages for lookups never contain file-system
//! paths; load errors do, because operators read them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use palisade_crds::document_check::is_dns_label;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Scheme prefix of resource URIs.
const URI_PREFIX: &str = "palisade://";
/// Longest document name.
const MAX_NAME_CHARS: usize = 253;
/// Longest title kept from a markdown heading.
const MAX_TITLE_CHARS: usize = 256;
/// How much of a caller's input an error message echoes.
const MAX_ECHO_CHARS: usize = 64;
/// How often a collection is read again when it changed while being read.
const LOAD_ATTEMPTS: usize = 3;
/// The symlink a ConfigMap volume swaps on update.
const CONFIGMAP_DATA_LINK: &str = "..data";

/// Limits on what is loaded and returned; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Largest document loaded; larger ones are skipped with a warning (1 MiB).
    pub max_document_bytes: usize,
    /// Most documents in one collection; more is a load error (10 000).
    pub max_documents_per_collection: usize,
    /// Most bytes of content over all collections; more is a load error (256 MiB).
    pub max_total_bytes: usize,
    /// Most hits one search returns (20).
    pub max_search_results: usize,
    /// Longest search snippet in characters, "…" included (160).
    pub snippet_chars: usize,
    /// Longest search query in characters (256).
    pub max_query_chars: usize,
    /// Most content bytes one read-all returns; a larger collection is an error (4 MiB).
    pub max_read_all_bytes: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 1024 * 1024,
            max_documents_per_collection: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_search_results: 20,
            snippet_chars: 160,
            max_query_chars: 256,
            max_read_all_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One document of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// File name, a valid document name.
    pub name: String,
    /// Collection the document belongs to.
    pub collection: String,
    /// Whole content (UTF-8).
    pub content: String,
    /// MIME type from the name's extension, see [`mime_type`].
    pub mime_type: &'static str,
    /// Text of the first `# ` heading of a markdown document (outside code fences), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl Document {
    fn new(collection: &str, name: String, content: String) -> Self {
        let mime_type = mime_type(&name);
        let title = (mime_type == "text/markdown")
            .then(|| markdown_title(&content))
            .flatten();
        Self {
            name,
            collection: collection.to_owned(),
            content,
            mime_type,
            title,
        }
    }
}

/// One line of a document that matches a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit<'a> {
    /// The document the line is in.
    pub document: &'a Document,
    /// Line number, 1-based.
    pub line: usize,
    /// The line, cut to at most `snippet_chars` characters around the match, "…" where cut.
    pub snippet: String,
}

/// Everything that can go wrong loading or looking up documents.
///
/// Load errors (the first group) are for operators and may name paths. Lookup errors are shown to
/// MCP clients and never contain a path; where they echo caller input, it is quoted, escaped and
/// cut to 64 characters.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A collection name to load is not a DNS label.
    #[error("document collection name {collection:?} is not a DNS label")]
    InvalidCollectionName {
        /// The name (cut to 64 characters).
        collection: String,
    },
    /// A collection to load is listed twice.
    #[error("document collection {collection:?} is listed twice")]
    DuplicateCollection {
        /// The collection.
        collection: String,
    },
    /// A collection's directory does not exist or is not a directory.
    #[error("document collection {collection:?} is missing: {} does not exist or is not a directory", path.display())]
    MissingCollection {
        /// The collection.
        collection: String,
        /// Where its directory should be.
        path: PathBuf,
    },
    /// A collection's directory could not be read.
    #[error("document collection {collection:?}: cannot read {}: {source}", path.display())]
    Io {
        /// The collection.
        collection: String,
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A collection has more documents than allowed.
    #[error("document collection {collection:?} has more than {limit} documents")]
    TooManyDocuments {
        /// The collection.
        collection: String,
        /// `max_documents_per_collection`.
        limit: usize,
    },
    /// All documents together are larger than allowed.
    #[error("documents exceed {limit} bytes in total (reached in collection {collection:?})")]
    TotalTooLarge {
        /// The collection being loaded when the limit was reached.
        collection: String,
        /// `max_total_bytes`.
        limit: usize,
    },
    /// The store has no such collection.
    #[error("unknown document collection {collection:?}")]
    UnknownCollection {
        /// The requested collection (cut to 64 characters).
        collection: String,
    },
    /// A requested name is not a valid document name.
    #[error("invalid document name {name:?}: use 1 to 253 of A-Z a-z 0-9 . _ - and do not start with '.'")]
    InvalidName {
        /// The requested name (cut to 64 characters).
        name: String,
    },
    /// A valid name that the collection does not have.
    #[error("document {name:?} not found in collection {collection:?}")]
    NotFound {
        /// The collection.
        collection: String,
        /// The requested name.
        name: String,
    },
    /// A search query that is empty or too long.
    #[error("invalid search query: {reason}")]
    InvalidQuery {
        /// What is wrong with it.
        reason: String,
    },
    /// A collection too large to return whole.
    #[error("document collection {collection:?} is too large to return whole ({size} bytes; the limit is {limit})")]
    ReadAllTooLarge {
        /// The collection.
        collection: String,
        /// Its content bytes.
        size: usize,
        /// `max_read_all_bytes`.
        limit: usize,
    },
    /// A resource URI that is not `palisade://<collection>/<name>`.
    #[error("invalid resource URI: {reason}")]
    InvalidUri {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl DocumentError {
    fn unknown_collection(collection: &str) -> Self {
        Self::UnknownCollection {
            collection: echo(collection),
        }
    }

    fn invalid_name(name: &str) -> Self {
        Self::InvalidName { name: echo(name) }
    }

    fn invalid_uri(reason: &'static str) -> Self {
        Self::InvalidUri { reason }
    }
}

/// Caller input as echoed in an error: at most [`MAX_ECHO_CHARS`] characters (the messages quote
/// it with `{:?}`, which escapes control characters).
fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHO_CHARS).collect()
}

/// All document collections of a server, loaded and immutable.
pub struct DocumentStore {
    collections: BTreeMap<String, Vec<Document>>,
    limits: DocumentLimits,
    document_count: usize,
    content_hash: String,
}

impl fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: BTreeMap<&str, usize> = self.collections.iter().map(|(c, d)| (c.as_str(), d.len())).collect();
        f.debug_struct("DocumentStore")
            .field("collections", &counts)
            .field("content_hash", &self.content_hash)
            .finish_non_exhaustive()
    }
}

impl DocumentStore {
    /// Loads `root/<collection>/` for each collection name given (the collections of the policy).
    ///
    /// A missing collection directory is an error naming the collection; so are too many documents
    /// in a collection and too many bytes in total. Single files that cannot be served are skipped
    /// with a warning.
    pub fn load(root: &Path, collections: &[&str], limits: &DocumentLimits) -> Result<Self, DocumentError> {
        let mut loaded = BTreeMap::new();
        let mut total_bytes = 0;
        for &collection in collections {
            if !is_dns_label(collection) {
                return Err(DocumentError::InvalidCollectionName {
                    collection: echo(collection),
                });
            }
            if loaded.contains_key(collection) {
                return Err(DocumentError::DuplicateCollection {
                    collection: collection.to_owned(),
                });
            }
            let documents = load_collection(&root.join(collection), collection, limits, total_bytes)?;
            total_bytes += documents.iter().map(|d| d.content.len()).sum::<usize>();
            loaded.insert(collection.to_owned(), documents);
        }
        Ok(Self::from_collections(loaded, *limits))
    }

    /// A store without collections (before the first load).
    pub fn empty() -> Self {
        Self::from_collections(BTreeMap::new(), DocumentLimits::default())
    }

    fn from_collections(collections: BTreeMap<String, Vec<Document>>, limits: DocumentLimits) -> Self {
        let document_count = collections.values().map(Vec::len).sum();
        let content_hash = hash_collections(&collections);
        Self {
            collections,
            limits,
            document_count,
            content_hash,
        }
    }

    /// Names of the collections, sorted.
    pub fn collections(&self) -> impl Iterator<Item = &str> {
        self.collections.keys().map(String::as_str)
    }

    /// The documents of a collection, sorted by name.
    pub fn list(&self, collection: &str) -> Result<&[Document], DocumentError> {
        self.collections
            .get(collection)
            .map(Vec::as_slice)
            .ok_or_else(|| DocumentError::unknown_collection(collection))
    }

    /// The document with exactly this name; the name is validated before anything is looked up.
    pub fn get(&self, collection: &str, name: &str) -> Result<&Document, DocumentError> {
        if !is_valid_document_name(name) {
            return Err(DocumentError::invalid_name(name));
        }
        let documents = self.list(collection)?;
        documents
            .binary_search_by(|d| d.name.as_str().cmp(name))
            .map(|i| &documents[i])
            .map_err(|_| DocumentError::NotFound {
                collection: collection.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Case-insensitive substring search over every line of the collection's documents, in name
    /// and line order, one hit per line, at most `max_search_results` hits.
    ///
    /// The query is trimmed; comparison is on Unicode lowercase (with final sigma folded to sigma,
    /// so "ΟΔΟΣ" finds "οδός"). An empty or white-space query, or one longer than
    /// `max_query_chars`, is an error.
    pub fn search(&self, collection: &str, query: &str) -> Result<Vec<SearchHit<'_>>, DocumentError> {
        let documents = self.list(collection)?;
        let needle = self.search_needle(query)?;
        let mut hits = Vec::new();
        let mut folded = String::new();
        for document in documents {
            for (index, line) in document.content.lines().enumerate() {
                if hits.len() >= self.limits.max_search_results {
                    return Ok(hits);
                }
                fold_into(line, &mut folded);
                if let Some(at) = folded.find(&needle) {
                    let (start, end) = original_span(line, at, at + needle.len());
                    let snippet = snippet(line, start, end, self.limits.snippet_chars);
                    hits.push(SearchHit {
                        document,
                        line: index + 1,
                        snippet,
                    });
                }
            }
        }
        Ok(hits)
    }

    /// The folded form of a valid query.
    fn search_needle(&self, query: &str) -> Result<String, DocumentError> {
        let max = self.limits.max_query_chars;
        if query.chars().nth(max).is_some() {
            return Err(DocumentError::InvalidQuery {
                reason: format!("longer than {max} characters"),
            });
        }
        let query = query.trim();
        if query.is_empty() {
            return Err(DocumentError::InvalidQuery {
                reason: "empty".to_owned(),
            });
        }
        let mut needle = String::new();
        fold_into(query, &mut needle);
        Ok(needle)
    }

    /// Every document of the collection, sorted by name; an error if their content together is
    /// larger than `max_read_all_bytes`.
    pub fn read_all(&self, collection: &str) -> Result<Vec<&Document>, DocumentError> {
        let documents = self.list(collection)?;
        let size: usize = documents.iter().map(|d| d.content.len()).sum();
        let limit = self.limits.max_read_all_bytes;
        if size > limit {
            return Err(DocumentError::ReadAllTooLarge {
                collection: collection.to_owned(),
                size,
                limit,
            });
        }
        Ok(documents.iter().collect())
    }

    /// Number of documents in all collections.
    pub fn document_count(&self) -> usize {
        self.document_count
    }

    /// `sha256:<hex>` over every collection name and each of its documents' name and content, in
    /// order: equal iff two loads hold the same collections and documents.
    pub fn content_hash(&self) -> String {
        self.content_hash.clone()
    }
}

/// Hashes collections unambiguously: every field is length-prefixed.
fn hash_collections(collections: &BTreeMap<String, Vec<Document>>) -> String {
    fn field(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    for (collection, documents) in collections {
        field(&mut hasher, collection.as_bytes());
        hasher.update((documents.len() as u64).to_le_bytes());
        for document in documents {
            field(&mut hasher, document.name.as_bytes());
            field(&mut hasher, document.content.as_bytes());
        }
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Loads one collection; reads it again (up to [`LOAD_ATTEMPTS`] times in all) if its ConfigMap
/// `..data` link was swapped meanwhile, so that one load sees one version of a ConfigMap.
fn load_collection(
    dir: &Path,
    collection: &str,
    limits: &DocumentLimits,
    bytes_before: usize,
) -> Result<Vec<Document>, DocumentError> {
    let dir = collection_dir(dir, collection)?;
    let mut attempt = 1;
    loop {
        let version = configmap_version(&dir);
        let documents = read_collection(&dir, collection, limits, bytes_before)?;
        if version == configmap_version(&dir) || attempt == LOAD_ATTEMPTS {
            return Ok(documents);
        }
        tracing::info!(
            collection,
            "document collection changed while loading, reading it again"
        );
        attempt += 1;
    }
}

/// The canonical collection directory.
fn collection_dir(dir: &Path, collection: &str) -> Result<PathBuf, DocumentError> {
    let missing = || DocumentError::MissingCollection {
        collection: collection.to_owned(),
        path: dir.to_owned(),
    };
    let canonical = match fs::canonicalize(dir) {
        Ok(canonical) => canonical,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(source) => {
            return Err(DocumentError::Io {
                collection: collection.to_owned(),
                path: dir.to_owned(),
                source,
            });
        }
    };
    if canonical.is_dir() {
        Ok(canonical)
    } else {
        Err(missing())
    }
}

/// Where the ConfigMap `..data` link points, if there is one.
fn configmap_version(dir: &Path) -> Option<PathBuf> {
    fs::read_link(dir.join(CONFIGMAP_DATA_LINK)).ok()
}

/// Reads every servable document of a canonical collection directory, sorted by name.
fn read_collection(
    dir: &Path,
    collection: &str,
    limits: &DocumentLimits,
    bytes_before: usize,
) -> Result<Vec<Document>, DocumentError> {
    let io_error = |source| DocumentError::Io {
        collection: collection.to_owned(),
        path: dir.to_owned(),
        source,
    };
    let mut documents = Vec::new();
    let mut total_bytes = bytes_before;
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let Some(name) = document_name(&entry.map_err(io_error)?.file_name(), collection) else {
            continue;
        };
        let content = match read_document(dir, &name, limits.max_document_bytes) {
            Ok(content) => content,
            Err(skip) => {
                tracing::warn!(collection, document = %name, reason = %skip, "skipping document");
                continue;
            }
        };
        if documents.len() == limits.max_documents_per_collection {
            let limit = limits.max_documents_per_collection;
            return Err(DocumentError::TooManyDocuments {
                collection: collection.to_owned(),
                limit,
            });
        }
        total_bytes += content.len();
        if total_bytes > limits.max_total_bytes {
            let limit = limits.max_total_bytes;
            return Err(DocumentError::TotalTooLarge {
                collection: collection.to_owned(),
                limit,
            });
        }
        documents.push(Document::new(collection, name, content));
    }
    documents.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(documents)
}

/// The document name of a directory entry, or `None` (with a warning unless the entry is hidden,
/// like the ConfigMap's `..data`) if it cannot be one.
fn document_name(file_name: &std::ffi::OsStr, collection: &str) -> Option<String> {
    let Some(name) = file_name.to_str() else {
        let name = file_name.to_string_lossy();
        tracing::warn!(collection, document = ?name, "skipping file: its name is not UTF-8");
        return None;
    };
    if name.starts_with('.') {
        tracing::debug!(collection, file = ?name, "skipping hidden file");
        return None;
    }
    if !is_valid_document_name(name) {
        tracing::warn!(collection, document = ?name, "skipping file: not a valid document name");
        return None;
    }
    Some(name.to_owned())
}

/// Why a file is not served.
#[derive(Debug)]
enum Skip {
    OutsideCollection,
    NotRegularFile,
    TooLarge(usize),
    NotUtf8,
    Changed,
    Io(io::ErrorKind),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideCollection => f.write_str("it resolves to a file outside the collection directory"),
            Self::NotRegularFile => f.write_str("not a regular file"),
            Self::TooLarge(limit) => write!(f, "larger than {limit} bytes"),
            Self::NotUtf8 => f.write_str("content is not UTF-8"),
            Self::Changed => f.write_str("it changed while being read"),
            Self::Io(kind) => write!(f, "cannot be read: {kind}"),
        }
    }
}

impl From<io::Error> for Skip {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}

/// Reads `dir/name` if it resolves to a regular file inside `dir` (canonical) and is within the
/// size limit.
///
/// The file's type and place are checked before it is opened (so that a FIFO or device is never
/// opened) and again on the opened file (so that a symlink swapped in between is caught).
fn read_document(dir: &Path, name: &str, max_bytes: usize) -> Result<String, Skip> {
    let path = dir.join(name);
    let target = confined_target(dir, &path)?;
    let metadata = fs::metadata(&target)?;
    if !metadata.is_file() {
        return Err(Skip::NotRegularFile);
    }
    if metadata.len() > max_bytes as u64 {
        return Err(Skip::TooLarge(max_bytes));
    }
    let file = File::open(&target)?;
    verify_opened(dir, &path, &file)?;
    let bytes = read_bounded(file, max_bytes)?;
    String::from_utf8(bytes).map_err(|_| Skip::NotUtf8)
}

/// `path` with every symlink resolved, if that stays inside `dir` (canonical).
fn confined_target(dir: &Path, path: &Path) -> Result<PathBuf, Skip> {
    let target = fs::canonicalize(path)?;
    if target.starts_with(dir) && target != dir {
        Ok(target)
    } else {
        Err(Skip::OutsideCollection)
    }
}

/// Checks that an opened file is a regular file inside `dir`: by the path the kernel reports for
/// it where there is one (Linux `/proc`), otherwise by resolving `path` again and comparing the
/// file's identity.
fn verify_opened(dir: &Path, path: &Path, file: &File) -> Result<(), Skip> {
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Err(Skip::NotRegularFile);
    }
    if let Some(real) = opened_path(file) {
        return if real.starts_with(dir) {
            Ok(())
        } else {
            Err(Skip::OutsideCollection)
        };
    }
    let again = fs::metadata(confined_target(dir, path)?)?;
    if same_file(&opened, &again) {
        Ok(())
    } else {
        Err(Skip::Changed)
    }
}

/// The path of an opened file as the kernel reports it.
#[cfg(target_os = "linux")]
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// The path of an opened file as the kernel reports it.
#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &File) -> Option<PathBuf> {
    None
}

/// Whether two metadata describe the same file.
#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether two metadata describe the same file (best effort without inode numbers).
#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Reads at most `max_bytes`, failing if there is more (the file may have grown since its size was
/// checked).
fn read_bounded(file: File, max_bytes: usize) -> Result<Vec<u8>, Skip> {
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max_bytes {
        Err(Skip::TooLarge(max_bytes))
    } else {
        Ok(bytes)
    }
}

/// Whether `name` is a valid document name: 1 to 253 characters from `A-Z a-z 0-9 . _ -`, not
/// starting with `.` (which also excludes `.` and `..`).
pub fn is_valid_document_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The text of the first `# ` heading outside code fences, trimmed, without a closing `#`
/// sequence, cut to [`MAX_TITLE_CHARS`] characters.
fn markdown_title(content: &str) -> Option<String> {
    let mut fence: Option<&str> = None;
    for line in content.trim_start_matches('\u{feff}').lines() {
        let indented = line.trim_start();
        if let Some(open) = fence {
            if indented.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if let Some(open) = ["```", "~~~"].into_iter().find(|f| indented.starts_with(f)) {
            fence = Some(open);
            continue;
        }
        if let Some(title) = line.strip_prefix("# ").map(heading_text).filter(|t| !t.is_empty()) {
            return Some(title.chars().take(MAX_TITLE_CHARS).collect());
        }
    }
    None
}

/// ATX heading text without its optional closing sequence (`# Title ##` → `Title`, `# C#` → `C#`).
fn heading_text(rest: &str) -> &str {
    let text = rest.trim();
    let unclosed = text.trim_end_matches('#');
    if unclosed.is_empty() || unclosed.ends_with(char::is_whitespace) {
        unclosed.trim_end()
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Search

/// One character case-folded: Unicode lowercase, final sigma as sigma.
fn fold(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l })
}

/// Writes the folded form of `text` into `out` (reusing its allocation).
fn fold_into(text: &str, out: &mut String) {
    out.clear();
    out.extend(text.chars().flat_map(fold));
}

/// The character span `[start, end)` of `line` whose folded form covers the folded byte range
/// `[from, to)` (folding may change lengths, e.g. 'İ' becomes two characters).
fn original_span(line: &str, from: usize, to: usize) -> (usize, usize) {
    let mut folded_at = 0;
    let mut start = None;
    let mut end = 0;
    for (index, c) in line.chars().enumerate() {
        if folded_at >= to {
            break;
        }
        let next = folded_at + fold(c).map(char::len_utf8).sum::<usize>();
        if start.is_none() && next > from {
            start = Some(index);
        }
        end = index + 1;
        folded_at = next;
    }
    (start.unwrap_or(end), end)
}

/// The line without surrounding white space, cut to at most `max_chars` characters (each "…"
/// marking a cut included) around the match at characters `[start, end)`; a match that does not
/// fit is shown from its start.
fn snippet(line: &str, start: usize, end: usize, max_chars: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    let lo = chars.iter().position(|c| !c.is_whitespace()).unwrap_or(chars.len());
    let hi = chars.iter().rposition(|c| !c.is_whitespace()).map_or(lo, |i| i + 1);
    if hi - lo <= max_chars {
        return chars[lo..hi].iter().collect();
    }
    let (start, end) = (start.clamp(lo, hi), end.clamp(lo, hi));
    if max_chars < 3 {
        return chars[start..hi].iter().take(max_chars).collect();
    }
    let (mut from, mut to) = window(lo, hi, start, end, max_chars - 2);
    if from == lo || to == hi {
        (from, to) = window(lo, hi, start, end, max_chars - 1);
    }
    let mut snippet = String::new();
    if from > lo {
        snippet.push('…');
    }
    snippet.extend(&chars[from..to]);
    if to < hi {
        snippet.push('…');
    }
    snippet
}

/// A window of `width` characters within `[lo, hi)` (longer than `width`) centred on
/// `[start, end)`, or starting at `start` if the match is not shorter than the window.
fn window(lo: usize, hi: usize, start: usize, end: usize, width: usize) -> (usize, usize) {
    let len = end.saturating_sub(start);
    let from = if len >= width {
        start
    } else {
        (start + len / 2).saturating_sub(width / 2)
    };
    let from = from.clamp(lo, hi - width);
    (from, from + width)
}

// ---------------------------------------------------------------------------------------------
// Resource URIs and MIME types

/// The resource URI of a document: `palisade://<collection>/<name>`, both percent-encoded (RFC 3986
/// unreserved characters kept, so valid names and collections appear unchanged).
pub fn resource_uri(collection: &str, name: &str) -> String {
    format!("{URI_PREFIX}{}/{}", percent_encode(collection), percent_encode(name))
}

/// Parses a resource URI back to `(collection, name)`, percent-decoding the name.
///
/// Accepts exactly `palisade://<collection>/<name>` where the collection is a DNS label and the
/// name decodes (strictly, as UTF-8) to a valid document name. Anything else is an error: another
/// scheme, a missing or extra part, a query or fragment, malformed escapes, and encoded separators,
/// dots or NULs, which all leave an invalid name.
pub fn parse_resource_uri(uri: &str) -> Result<(String, String), DocumentError> {
    let rest = uri
        .strip_prefix(URI_PREFIX)
        .ok_or(DocumentError::invalid_uri("expected palisade://<collection>/<name>"))?;
    if rest.contains(['?', '#']) {
        return Err(DocumentError::invalid_uri("a query or fragment is not allowed"));
    }
    let (collection, encoded) = rest
        .split_once('/')
        .ok_or(DocumentError::invalid_uri("expected palisade://<collection>/<name>"))?;
    if !is_dns_label(collection) {
        return Err(DocumentError::invalid_uri("the collection is not a DNS label"));
    }
    if encoded.contains('/') {
        return Err(DocumentError::invalid_uri("the name must be a single path segment"));
    }
    if encoded.len() > 3 * MAX_NAME_CHARS {
        return Err(DocumentError::invalid_uri("the name is too long"));
    }
    let decoded = percent_decode(encoded).ok_or(DocumentError::invalid_uri("malformed percent-encoding"))?;
    let name = String::from_utf8(decoded).map_err(|_| DocumentError::invalid_uri("the name is not UTF-8"))?;
    if !is_valid_document_name(&name) {
        return Err(DocumentError::invalid_name(&name));
    }
    Ok((collection.to_owned(), name))
}

/// Percent-encodes every byte except RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// Decodes `%XX` escapes; `None` for a `%` not followed by two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            decoded.push(hex_value(hex[0])? << 4 | hex_value(hex[1])?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Some(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// MIME type by extension (case-insensitive): `.md`/`.markdown` → `text/markdown`, `.txt` →
/// `text/plain`, `.json` → `application/json`, `.yaml`/`.yml` → `application/yaml`, `.html` →
/// `text/html`, `.csv` → `text/csv`, anything else → `text/plain`.
pub fn mime_type(name: &str) -> &'static str {
    let Some((_, extension)) = name.rsplit_once('.') else {
        return "text/plain";
    };
    match extension.to_ascii_lowercase().as_str() {
        "md" | "markdown" => "text/markdown",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "html" => "text/html",
        "csv" => "text/csv",
        _ => "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- names, URIs, MIME types, titles, snippets (no file system) ----

    /// Every traversal form from the threat model, as a raw name.
    const TRAVERSALS: &[&str] = &[
        "../confidential/confidential.md",
        "..",
        ".",
        "/etc/passwd",
        "public/../confidential.md",
        "%2e%2e%2fconfidential.md",
        "..%2f",
        "%2F",
        "\\..\\",
        "..\\confidential.md",
        "confidential.md%00.txt",
        "confidential.md\0.txt",
        "confidential.md\n",
        "",
        " ",
        ".hidden.md",
        "..data",
        "C:confidential.md",
    ];

    #[test]
    fn document_names() {
        for name in [
            "public.md",
            "a",
            "A-Z_0.9",
            "-dash",
            "_x",
            "x.",
            "a..b",
            &"x".repeat(253),
        ] {
            assert!(is_valid_document_name(name), "{name}");
        }
        for name in TRAVERSALS.iter().copied().chain(["é.md", "a b", &"x".repeat(254)]) {
            assert!(!is_valid_document_name(name), "{name:?}");
        }
    }

    #[test]
    fn resource_uris_round_trip() {
        assert_eq!(resource_uri("public", "public.md"), "palisade://public/public.md");
        assert_eq!(resource_uri("public", "a b/c"), "palisade://public/a%20b%2Fc");
        for name in ["public.md", "-x", "a..b", "_.-", &"z".repeat(253)] {
            let uri = resource_uri("public", name);
            assert_eq!(
                parse_resource_uri(&uri).unwrap(),
                ("public".to_owned(), name.to_owned())
            );
        }
        assert_eq!(
            parse_resource_uri("palisade://public/public%2Emd").unwrap(),
            ("public".to_owned(), "public.md".to_owned())
        );
    }

    #[test]
    fn resource_uris_refuse_traversal_and_malformed_input() {
        let bad = [
            "palisade://public/..%2Fconfidential%2Fconfidential.md",
            "palisade://public/%2e%2e%2fconfidential.md",
            "palisade://public/%2E%2E",
            "palisade://public/..",
            "palisade://public/.",
            "palisade://public/..%2f",
            "palisade://public/%2F",
            "palisade://public/%2f",
            "palisade://public/%5C..%5C",
            "palisade://public/%5c..%5cconfidential.md",
            "palisade://public/confidential.md%00.txt",
            "palisade://public/%00",
            "palisade://public/../confidential/confidential.md",
            "palisade://public/../confidential.md",
            "palisade://public/a/b",
            "palisade://public/%252e%252e%252f",
            "palisade://public/%C0%AE%C0%AE",
            "palisade://public/%ff",
            "palisade://public/%2",
            "palisade://public/%zz",
            "palisade://public/%",
            "palisade://public/%2Fetc%2Fpasswd",
            "palisade://public//etc/passwd",
            "palisade://public/",
            "palisade://public",
            "palisade://",
            "palisade:///public.md",
            "palisade://../confidential.md",
            "palisade://%2e%2e/confidential.md",
            "palisade://Public/public.md",
            "palisade://user@public/public.md",
            "palisade://public:80/public.md",
            "palisade://public/public.md?x=1",
            "palisade://public/public.md#x",
            "palisade:/public/public.md",
            "PALISADE://public/public.md",
            "file:///etc/passwd",
            "https://public/public.md",
            "public/public.md",
            "",
        ];
        for uri in bad {
            let error = parse_resource_uri(uri).expect_err(uri);
            assert!(
                matches!(
                    error,
                    DocumentError::InvalidUri { .. } | DocumentError::InvalidName { .. }
                ),
                "{uri}: {error}"
            );
        }
        let long = format!("palisade://public/{}", "%41".repeat(254));
        assert!(parse_resource_uri(&long).is_err());
    }

    #[test]
    fn mime_types() {
        let cases = [
            ("a.md", "text/markdown"),
            ("a.MARKDOWN", "text/markdown"),
            ("a.txt", "text/plain"),
            ("a.json", "application/json"),
            ("a.yaml", "application/yaml"),
            ("a.yml", "application/yaml"),
            ("a.html", "text/html"),
            ("a.csv", "text/csv"),
            ("a.htm", "text/plain"),
            ("a.exe", "text/plain"),
            ("README", "text/plain"),
        ];
        for (name, mime) in cases {
            assert_eq!(mime_type(name), mime, "{name}");
        }
    }

    #[test]
    fn titles() {
        assert_eq!(markdown_title("# Public\n\nbody"), Some("Public".to_owned()));
        assert_eq!(
            markdown_title("\u{feff}intro\n#  Spaced  ##\n# Second"),
            Some("Spaced".to_owned())
        );
        assert_eq!(markdown_title("# C#"), Some("C#".to_owned()));
        assert_eq!(
            markdown_title("```sh\n# not a title\n```\n# Real"),
            Some("Real".to_owned())
        );
        assert_eq!(markdown_title("## Sub\n#NoSpace\n#\n# ##"), None);
        assert_eq!(
            markdown_title(&format!("# {}", "t".repeat(1000))).unwrap().len(),
            MAX_TITLE_CHARS
        );
        let doc = Document::new("c", "a.txt".to_owned(), "# not markdown".to_owned());
        assert_eq!(doc.title, None);
    }

    #[test]
    fn snippets_are_centred_and_bounded() {
        let line = format!("{}needle{}", "a".repeat(100), "b".repeat(100));
        let s = snippet(&line, 100, 106, 20);
        assert_eq!(s.chars().count(), 20);
        assert!(s.starts_with('…') && s.ends_with('…') && s.contains("needle"), "{s}");
        let s = snippet(&line, 0, 1, 20);
        assert_eq!(s, format!("{}…", "a".repeat(19)));
        let s = snippet(&line, 205, 206, 20);
        assert_eq!(s, format!("…{}", "b".repeat(19)));
        assert_eq!(snippet("   short line  ", 3, 8, 20), "short line");
        // Multi-byte characters are never split.
        let line = format!("{}stratégie{}", "é".repeat(300), "ü".repeat(300));
        let s = snippet(&line, 300, 309, 40);
        assert_eq!(s.chars().count(), 40);
        assert!(s.contains("stratégie"));
    }

    #[test]
    fn folding_maps_matches_back_to_the_original_characters() {
        let line = "İİİ Straße ΟΔΟΣ";
        let mut folded = String::new();
        fold_into(line, &mut folded);
        let at = folded.find("straße").unwrap();
        assert_eq!(original_span(line, at, at + "straße".len()), (4, 10));
        let at = folded.find("οδοσ").unwrap();
        assert_eq!(original_span(line, at, at + "οδοσ".len()), (11, 15));
    }

    proptest::proptest! {
        #[test]
        fn snippet_never_exceeds_its_bound(
            line in "[a-zé İ€ς\t]{0,300}",
            a in 0usize..400,
            len in 0usize..30,
            max in 0usize..200,
        ) {
            let count = line.chars().count();
            let start = a.min(count);
            let end = (start + len).min(count);
            let s = snippet(&line, start, end, max);
            proptest::prop_assert!(s.chars().count() <= max);
            let matched: String = line.chars().skip(start).take(end - start).collect();
            if max >= 3 && matched.chars().count() + 2 <= max && !matched.trim().is_empty() {
                proptest::prop_assert!(s.contains(matched.trim()), "{s:?} lacks {matched:?}");
            }
        }

        #[test]
        fn parsed_uris_always_name_valid_documents(uri in "palisade://[a-z.%/]{0,8}/[A-Za-z0-9%./\\\\_-]{0,20}") {
            if let Ok((collection, name)) = parse_resource_uri(&uri) {
                proptest::prop_assert!(is_dns_label(&collection));
                proptest::prop_assert!(is_valid_document_name(&name));
                proptest::prop_assert!(!name.contains(['/', '\\', '\0']));
            }
        }

        #[test]
        fn resource_uris_round_trip_for_all_valid_names(name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,252}") {
            let parsed = parse_resource_uri(&resource_uri("docs", &name)).unwrap();
            proptest::prop_assert_eq!(parsed, ("docs".to_owned(), name));
        }
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DocumentStore>();
        let store = DocumentStore::empty();
        assert_eq!(store.document_count(), 0);
        assert_eq!(store.collections().count(), 0);
        assert!(matches!(
            store.list("public"),
            Err(DocumentError::UnknownCollection { .. })
        ));
    }

    // ---- loading from a directory tree that looks like mounted ConfigMaps ----

    #[cfg(unix)]
    mod mounted {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::super::*;
        use super::TRAVERSALS;

        /// A unique directory under the system temp dir, removed on drop.
        struct TempTree(PathBuf);

        impl TempTree {
            fn new() -> Self {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let unique = format!(
                    "palisade-documents-{}-{}-{nanos}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let path = std::env::temp_dir().join(unique);
                fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            fn path(&self) -> &Path {
                &self.0
            }

            fn write(&self, relative: &str, content: impl AsRef<[u8]>) {
                let path = self.0.join(relative);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, content).unwrap();
            }

            fn link(&self, relative: &str, target: impl AsRef<Path>) {
                symlink(target, self.0.join(relative)).unwrap();
            }

            /// Mounts a ConfigMap the way the kubelet does: files in a timestamped directory,
            /// `..data` pointing at it, one symlink per key through `..data`. Mounting again swaps
            /// `..data` atomically and removes the previous version.
            fn configmap(&self, collection: &str, version: u32, files: &[(&str, &str)]) {
                let dir = self.0.join(collection);
                let data = format!("..2026_11_22_01_02_03.{version}");
                for (key, content) in files {
                    self.write(&format!("{collection}/{data}/{key}"), content);
                }
                let previous = fs::read_link(dir.join("..data")).ok();
                symlink(&data, dir.join("..data_tmp")).unwrap();
                fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
                for (key, _) in files {
                    let link = dir.join(key);
                    if fs::symlink_metadata(&link).is_err() {
                        symlink(format!("..data/{key}"), link).unwrap();
                    }
                }
                if let Some(previous) = previous {
                    fs::remove_dir_all(dir.join(previous)).unwrap();
                }
            }
        }

        impl Drop for TempTree {
            fn drop(&mut self) {
                let _ = fs::remove_dir_all(&self.0);
            }
        }

        const PUBLIC_MD: &str = "# Public information\n\nOur Stratégie is public.\nNothing secret here.\n";
        const CONFIDENTIAL_MD: &str = "# Confidential\n\nThe real stratégie: SECRET-42.\n";

        /// `public` and `confidential` ConfigMaps, plus a secret outside every collection.
        fn company() -> TempTree {
            let tree = TempTree::new();
            tree.configmap(
                "public",
                1,
                &[
                    ("public.md", PUBLIC_MD),
                    ("notes.txt", "plain notes\n"),
                    ("data.json", "{\"a\": 1}\n"),
                ],
            );
            tree.configmap("confidential", 1, &[("confidential.md", CONFIDENTIAL_MD)]);
            tree.write("outside/secret.txt", "SECRET-OUTSIDE\n");
            tree
        }

        fn load(tree: &TempTree, collections: &[&str]) -> DocumentStore {
            DocumentStore::load(tree.path(), collections, &DocumentLimits::default()).unwrap()
        }

        fn names(store: &DocumentStore, collection: &str) -> Vec<String> {
            store.list(collection).unwrap().iter().map(|d| d.name.clone()).collect()
        }

        #[test]
        fn loads_configmap_mounts() {
            let tree = company();
            let store = load(&tree, &["public", "confidential"]);
            assert_eq!(store.collections().collect::<Vec<_>>(), ["confidential", "public"]);
            assert_eq!(names(&store, "public"), ["data.json", "notes.txt", "public.md"]);
            assert_eq!(store.document_count(), 4);

            let public = store.get("public", "public.md").unwrap();
            assert_eq!(public.content, PUBLIC_MD);
            assert_eq!(public.collection, "public");
            assert_eq!(public.mime_type, "text/markdown");
            assert_eq!(public.title.as_deref(), Some("Public information"));
            let data = store.get("public", "data.json").unwrap();
            assert_eq!((data.mime_type, data.title.as_deref()), ("application/json", None));
            assert_eq!(store.get("public", "notes.txt").unwrap().mime_type, "text/plain");

            let all = store.read_all("public").unwrap();
            assert_eq!(
                all.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                ["data.json", "notes.txt", "public.md"]
            );
            let nothing = DocumentStore::load(tree.path(), &[], &DocumentLimits::default()).unwrap();
            assert_eq!(nothing.document_count(), 0);
        }

        #[test]
        fn lookup_errors() {
            let tree = company();
            let store = load(&tree, &["public"]);
            let error = store.get("public", "x").unwrap_err();
            assert!(matches!(error, DocumentError::NotFound { .. }));
            assert_eq!(error.to_string(), r#"document "x" not found in collection "public""#);
            assert!(matches!(
                store.get("nope", "x"),
                Err(DocumentError::UnknownCollection { .. })
            ));
            assert!(matches!(
                store.get("nope", ".."),
                Err(DocumentError::InvalidName { .. })
            ));
            assert!(matches!(
                store.list("confidential"),
                Err(DocumentError::UnknownCollection { .. })
            ));
            assert!(matches!(
                store.search("nope", "x"),
                Err(DocumentError::UnknownCollection { .. })
            ));
            assert!(matches!(
                store.read_all("nope"),
                Err(DocumentError::UnknownCollection { .. })
            ));
            let long = "../".repeat(1000);
            let message = store.get(&long, "x").unwrap_err().to_string();
            assert!(message.len() < 200, "{message}");
            let message = store.get("public", "a\u{1b}[31m\nb").unwrap_err().to_string();
            assert!(!message.contains(['\u{1b}', '\n']), "{message}");
        }

        #[test]
        fn every_traversal_form_is_refused() {
            let tree = company();
            // A symlink out of the collection (relative, absolute and into a sibling collection),
            // a symlink to the collection directory itself, and a dangling one.
            tree.link("public/leak.md", "../outside/secret.txt");
            tree.link("public/absolute.md", tree.path().join("outside/secret.txt"));
            tree.link("public/sibling.md", "../confidential/confidential.md");
            tree.link("public/etc-passwd", "/etc/passwd");
            tree.link("public/self", ".");
            tree.link("public/dangling.md", "..data/nope.md");
            let store = load(&tree, &["public", "confidential"]);
            assert_eq!(names(&store, "public"), ["data.json", "notes.txt", "public.md"]);

            for name in [
                "leak.md",
                "absolute.md",
                "sibling.md",
                "etc-passwd",
                "self",
                "dangling.md",
            ] {
                assert!(
                    matches!(store.get("public", name), Err(DocumentError::NotFound { .. })),
                    "{name}"
                );
            }
            for name in TRAVERSALS {
                let error = store.get("public", name).unwrap_err();
                assert!(matches!(error, DocumentError::InvalidName { .. }), "{name:?}: {error}");
                let message = error.to_string();
                assert!(!message.contains(tree.path().to_str().unwrap()), "{message}");
            }
            for (collection, name) in [("..", "confidential/confidential.md"), ("public/..", "confidential.md")] {
                assert!(store.get(collection, name).is_err());
            }
            for uri in [
                "palisade://public/..%2Fconfidential%2Fconfidential.md",
                "palisade://public/%2e%2e%2fconfidential.md",
                "palisade://public/..%2f",
                "palisade://public/%2F",
                "palisade://public/%5C..%5C",
                "palisade://public/confidential.md%00.txt",
                "palisade://public/%2Fetc%2Fpasswd",
                "palisade://public/%2e%2e",
            ] {
                assert!(parse_resource_uri(uri).is_err(), "{uri}");
            }
            // Nothing outside `public` is reachable through it, whatever the lookup.
            for hit in store.search("public", "secret").unwrap() {
                assert_eq!(hit.document.collection, "public");
                assert!(!hit.snippet.contains("SECRET"), "{}", hit.snippet);
            }
            assert!(
                store
                    .read_all("public")
                    .unwrap()
                    .iter()
                    .all(|d| !d.content.contains("SECRET"))
            );
        }

        #[test]
        fn hidden_invalid_and_unreadable_files_are_skipped() {
            let tree = company();
            tree.write("public/.hidden.md", "hidden");
            tree.write("public/bad name.md", "space");
            tree.write("public/ünïcode.md", "non-ascii name");
            tree.write("public/binary.bin", [0xff, 0xfe, 0x00, 0x80]);
            tree.write("public/sub/nested.md", "nested");
            tree.write("public/large.txt", "x".repeat(2000));
            let not_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9.md");
            fs::write(tree.path().join("public").join(not_utf8), "latin-1 name").unwrap();
            // A FIFO would block a reader forever; it must be skipped without being opened.
            let fifo = tree.path().join("public/pipe.txt");
            let made_fifo = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success());
            let limits = DocumentLimits {
                max_document_bytes: 1000,
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["public"], &limits).unwrap();
            assert_eq!(names(&store, "public"), ["data.json", "notes.txt", "public.md"]);
            if made_fifo {
                tree.link("public/pipe-link.txt", "pipe.txt");
                let store = DocumentStore::load(tree.path(), &["public"], &limits).unwrap();
                assert_eq!(store.document_count(), 3);
            }
        }

        #[test]
        fn missing_and_invalid_collections_are_load_errors() {
            let tree = company();
            let limits = DocumentLimits::default();
            let error = DocumentStore::load(tree.path(), &["public", "missing"], &limits).unwrap_err();
            assert!(matches!(error, DocumentError::MissingCollection { .. }));
            assert!(error.to_string().contains("\"missing\""), "{error}");
            tree.write("file", "not a directory");
            let error = DocumentStore::load(tree.path(), &["file"], &limits).unwrap_err();
            assert!(matches!(error, DocumentError::MissingCollection { .. }), "{error}");
            for collection in ["..", "../outside", "Public", "", "a/b"] {
                let error = DocumentStore::load(tree.path(), &[collection], &limits).unwrap_err();
                assert!(
                    matches!(error, DocumentError::InvalidCollectionName { .. }),
                    "{collection}: {error}"
                );
            }
            let error = DocumentStore::load(tree.path(), &["public", "public"], &limits).unwrap_err();
            assert!(matches!(error, DocumentError::DuplicateCollection { .. }));
        }

        #[test]
        fn limits_are_enforced() {
            let tree = company();
            let few = DocumentLimits {
                max_documents_per_collection: 2,
                ..DocumentLimits::default()
            };
            let error = DocumentStore::load(tree.path(), &["public"], &few).unwrap_err();
            assert!(
                matches!(error, DocumentError::TooManyDocuments { limit: 2, .. }),
                "{error}"
            );
            let exact = DocumentLimits {
                max_documents_per_collection: 3,
                ..DocumentLimits::default()
            };
            assert!(DocumentStore::load(tree.path(), &["public"], &exact).is_ok());

            let total = PUBLIC_MD.len() + "plain notes\n".len() + "{\"a\": 1}\n".len();
            let small = DocumentLimits {
                max_total_bytes: total + CONFIDENTIAL_MD.len() - 1,
                ..DocumentLimits::default()
            };
            let error = DocumentStore::load(tree.path(), &["public", "confidential"], &small).unwrap_err();
            assert!(matches!(error, DocumentError::TotalTooLarge { .. }), "{error}");
            let enough = DocumentLimits {
                max_total_bytes: total + CONFIDENTIAL_MD.len(),
                ..DocumentLimits::default()
            };
            assert!(DocumentStore::load(tree.path(), &["public", "confidential"], &enough).is_ok());

            let read_all = DocumentLimits {
                max_read_all_bytes: total - 1,
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["public"], &read_all).unwrap();
            let error = store.read_all("public").unwrap_err();
            assert!(matches!(error, DocumentError::ReadAllTooLarge { .. }), "{error}");
            let read_all = DocumentLimits {
                max_read_all_bytes: total,
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["public"], &read_all).unwrap();
            assert_eq!(store.read_all("public").unwrap().len(), 3);

            let exact_doc = DocumentLimits {
                max_document_bytes: PUBLIC_MD.len(),
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["public"], &exact_doc).unwrap();
            assert!(store.get("public", "public.md").is_ok());
            let under = DocumentLimits {
                max_document_bytes: PUBLIC_MD.len() - 1,
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["public"], &under).unwrap();
            assert!(matches!(
                store.get("public", "public.md"),
                Err(DocumentError::NotFound { .. })
            ));
        }

        #[test]
        fn search_is_case_insensitive_capped_and_bounded() {
            let tree = company();
            let many: String = (1..=50).map(|i| format!("line {i} has the Keyword\n")).collect();
            let long = format!("{}STRATÉGIE{}\n", "é".repeat(500), "ß".repeat(500));
            tree.configmap(
                "notes",
                1,
                &[
                    ("many.txt", &many),
                    ("long.md", &long),
                    ("greek.txt", "ὁ δρόμος ΟΔΟΣ\n"),
                ],
            );
            let store = load(&tree, &["public", "confidential", "notes"]);

            let hits = store.search("public", "STRATÉGIE").unwrap();
            assert_eq!(hits.len(), 1);
            assert_eq!((hits[0].document.name.as_str(), hits[0].line), ("public.md", 3));
            assert_eq!(hits[0].snippet, "Our Stratégie is public.");
            assert_eq!(store.search("public", "  nothing SECRET ").unwrap()[0].line, 4);
            assert!(store.search("public", "SECRET-42").unwrap().is_empty());

            let hits = store.search("notes", "keyword").unwrap();
            assert_eq!(hits.len(), 20);
            assert!(hits.iter().all(|h| h.document.name == "many.txt"));
            assert_eq!(
                hits.iter().map(|h| h.line).collect::<Vec<_>>(),
                (1..=20).collect::<Vec<_>>()
            );

            let hits = store.search("notes", "stratégie").unwrap();
            assert_eq!(hits.len(), 1);
            let snippet = &hits[0].snippet;
            assert_eq!(snippet.chars().count(), 160);
            assert!(snippet.starts_with('…') && snippet.ends_with('…') && snippet.contains("STRATÉGIE"));
            assert_eq!(store.search("notes", "οδοσ").unwrap()[0].snippet, "ὁ δρόμος ΟΔΟΣ");

            for query in ["", "   ", "\n\t", &"q".repeat(257)] {
                let error = store.search("notes", query).unwrap_err();
                assert!(matches!(error, DocumentError::InvalidQuery { .. }), "{query:?}");
            }
            assert!(store.search("notes", &"q".repeat(256)).unwrap().is_empty());
            let none = DocumentLimits {
                max_search_results: 0,
                ..DocumentLimits::default()
            };
            let store = DocumentStore::load(tree.path(), &["notes"], &none).unwrap();
            assert!(store.search("notes", "keyword").unwrap().is_empty());
        }

        #[test]
        fn content_hash_follows_content() {
            let tree = company();
            let first = load(&tree, &["public", "confidential"]);
            let again = load(&tree, &["confidential", "public"]);
            assert_eq!(first.content_hash(), again.content_hash());
            assert!(first.content_hash().starts_with("sha256:"));
            assert_eq!(first.content_hash().len(), "sha256:".len() + 64);
            assert_ne!(first.content_hash(), DocumentStore::empty().content_hash());
            assert_ne!(first.content_hash(), load(&tree, &["public"]).content_hash());

            // A ConfigMap update (atomic `..data` swap) is seen, and changes the hash.
            let update = [
                ("public.md", "# Public v2\n"),
                ("notes.txt", "plain notes\n"),
                ("data.json", "{\"a\": 1}\n"),
            ];
            tree.configmap("public", 2, &update);
            let updated = load(&tree, &["public", "confidential"]);
            assert_ne!(updated.content_hash(), first.content_hash());
            assert_eq!(
                updated.get("public", "public.md").unwrap().title.as_deref(),
                Some("Public v2")
            );

            // Same content under a new ConfigMap version: same hash.
            tree.configmap("public", 3, &update);
            assert_eq!(
                load(&tree, &["public", "confidential"]).content_hash(),
                updated.content_hash()
            );

            // A renamed document changes the hash even with the same content.
            let renamed = TempTree::new();
            renamed.configmap(
                "public",
                1,
                &[("other.md", "# Public v2\n"), ("notes.txt", "plain notes\n")],
            );
            let original = TempTree::new();
            original.configmap(
                "public",
                1,
                &[("public.md", "# Public v2\n"), ("notes.txt", "plain notes\n")],
            );
            assert_ne!(
                load(&renamed, &["public"]).content_hash(),
                load(&original, &["public"]).content_hash()
            );
        }

        #[test]
        fn plain_directories_load_too() {
            let tree = TempTree::new();
            tree.write("docs/readme.md", "# Readme\n");
            tree.write("docs/b.txt", "b\n");
            let store = load(&tree, &["docs"]);
            assert_eq!(names(&store, "docs"), ["b.txt", "readme.md"]);
            assert!(format!("{store:?}").contains("docs"));
        }
    }
}
