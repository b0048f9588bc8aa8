//! The headers Palisade sends an HTTP upstream (`--upstream-header NAME=FILE`): the upstream's
//! own credentials, read from files (in a pod, Secret keys mounted by the operator).
//!
//! - A value is the file's whole content, one trailing newline removed (as `echo` and Secrets
//!   made from files add one). It is marked sensitive, so that it is never printed with the
//!   request, and never logged: errors name the header and the file, never the content.
//! - The files are read when the server starts (a missing or malformed one refuses the start)
//!   and again at most every [`RELOAD_INTERVAL`] while requests are sent, so that a rotated Secret
//!   is used within seconds, without a restart. A file that cannot be read later keeps the last
//!   good value, with a warning: a rotation that goes wrong does not cut the upstream off.
//! - No header of Palisade's callers is ever among them: a caller's token is not the upstream's
//!   to see (MCP authorization 2025-11-25, "Access Token Privilege Restriction").

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// How long values read from the files are used before the files are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// One `--upstream-header NAME=FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFile {
    /// The header's name.
    pub name: HeaderName,
    /// The file holding its value.
    pub path: PathBuf,
}

/// Parses `NAME=FILE` (the flag's value).
pub fn parse_header_file(text: &str) -> Result<HeaderFile, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=FILE"))?;
    if let Some(problem) = palisade_crds::upstream::header_name_problem(name) {
        return Err(problem);
    }
    if path.is_empty() {
        return Err(format!("no file for header {name:?}"));
    }
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| format!("{name:?}: {error}"))?;
    Ok(HeaderFile {
        name,
        path: PathBuf::from(path),
    })
}

/// The headers for the upstream, read from their files.
#[derive(Debug)]
pub struct Credentials {
    files: Vec<HeaderFile>,
    headers: ArcSwap<HeaderMap>,
    /// When the files were last read; held while they are read again, so one request reads them.
    read_at: Mutex<Instant>,
}

impl Credentials {
    /// Reads every file once; fails naming the first header whose file cannot be used.
    pub fn load(files: Vec<HeaderFile>) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for file in &files {
            headers.insert(file.name.clone(), read_value(file)?);
        }
        Ok(Self {
            files,
            headers: ArcSwap::from_pointee(headers),
            read_at: Mutex::new(Instant::now()),
        })
    }

    /// No headers.
    pub fn none() -> Self {
        Self::load(Vec::new()).expect("no files to read")
    }

    /// The headers to send now: read again from their files when the last read is older than
    /// [`RELOAD_INTERVAL`].
    pub fn headers(&self) -> Arc<HeaderMap> {
        if !self.files.is_empty()
            && let Ok(mut read_at) = self.read_at.try_lock()
            && read_at.elapsed() >= RELOAD_INTERVAL
        {
            *read_at = Instant::now();
            self.reload();
        }
        self.headers.load_full()
    }

    fn reload(&self) {
        let mut headers = HeaderMap::clone(&self.headers.load());
        let mut changed = false;
        for file in &self.files {
            match read_value(file) {
                Ok(value) => {
                    if headers.get(&file.name) != Some(&value) {
                        tracing::info!(header = %file.name, file = %file.path.display(), "upstream header changed; using the new value");
                        headers.insert(file.name.clone(), value);
                        changed = true;
                    }
                }
                Err(error) => tracing::warn!(%error, "keeping the last value of an upstream header"),
            }
        }
        if changed {
            self.headers.store(Arc::new(headers));
        }
    }
}

/// The value in `file`, marked sensitive.
fn read_value(file: &HeaderFile) -> Result<HeaderValue, String> {
    let bytes = std::fs::read(&file.path)
        .map_err(|error| format!("cannot read {} (header {}): {error}", file.path.display(), file.name))?;
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.is_empty() {
        return Err(format!("{} (header {}) is empty", file.path.display(), file.name));
    }
    let mut value = HeaderValue::from_bytes(bytes).map_err(|_| {
        format!(
            "{} (header {}) holds a character a header value cannot (a control character or a line break)",
            file.path.display(),
            file.name
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-credentials-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file(dir: &std::path::Path, name: &str, content: &[u8]) -> HeaderFile {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        parse_header_file(&format!("{name}={}", path.display())).unwrap()
    }

    #[test]
    fn a_flag_is_a_permitted_header_name_and_a_file() {
        let parsed = parse_header_file("X-API-Key=/etc/palisade/secrets/up/key").unwrap();
        assert_eq!(parsed.name, "x-api-key");
        assert_eq!(parsed.path, PathBuf::from("/etc/palisade/secrets/up/key"));
        assert!(parse_header_file("Host=/x").unwrap_err().contains("set by Palisade"));
        assert!(
            parse_header_file("Mcp-Session-Id=/x")
                .unwrap_err()
                .contains("set by Palisade")
        );
        assert!(
            parse_header_file("Authorization")
                .unwrap_err()
                .contains("not NAME=FILE")
        );
        assert!(parse_header_file("Authorization=").unwrap_err().contains("no file"));
    }

    #[test]
    fn values_lose_one_trailing_newline_are_sensitive_and_are_never_in_errors() {
        let dir = scratch("values");
        let token = file(&dir, "Authorization", b"Bearer s3cret\n");
        let credentials = Credentials::load(vec![token]).unwrap();
        let headers = credentials.headers();
        assert_eq!(headers["authorization"], "Bearer s3cret");
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{headers:?}").contains("s3cret"));

        let broken = file(&dir, "X-Key", b"s3cret\nInjected: yes");
        let error = Credentials::load(vec![broken]).unwrap_err();
        assert!(
            error.contains("header x-key") && error.contains("line break"),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
        let missing = parse_header_file("X-Key=/nonexistent/key").unwrap();
        assert!(
            Credentials::load(vec![missing])
                .unwrap_err()
                .contains("cannot read /nonexistent/key")
        );
        let empty = file(&dir, "X-Empty", b"\n");
        assert!(Credentials::load(vec![empty]).unwrap_err().contains("is empty"));
    }

    #[test]
    fn a_rotated_file_is_used_after_the_reload_interval_and_a_broken_one_keeps_the_last_value() {
        let dir = scratch("rotation");
        let key = file(&dir, "X-API-Key", b"first");
        let path = key.path.clone();
        let credentials = Credentials::load(vec![key]).unwrap();
        std::fs::write(&path, b"second").unwrap();
        assert_eq!(credentials.headers()["x-api-key"], "first", "not before the interval");
        std::thread::sleep(RELOAD_INTERVAL);
        assert_eq!(credentials.headers()["x-api-key"], "second");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(RELOAD_INTERVAL);
        assert_eq!(credentials.headers()["x-api-key"], "second", "the last good value");
    }
}
