//! Honest docs: every command in README.md and docs/*.md (and the other READMEs a user reads)
//! works as written.
//!
//! Each fenced `sh` block is read line by line (continuation lines joined, comments, redirections
//! and pipes cut off) and each command is classified:
//! - `palisade-server …`, `palisade-operator …`, `cargo run -p <package> -- …`: when it is concrete
//!   (no placeholder, every file it names exists) it is run from the repository root and must
//!   succeed without an error on standard error (`policy explain` may deny); a block without a
//!   language right after it that starts with the command's first output line must be its whole
//!   output. Otherwise (placeholders such as `FILE...`, `deploy/team-a/`, `"$TOKEN"`) its
//!   subcommand and every flag are checked against the binary's `--help`. `serve` and `run` are
//!   only checked, never run.
//! - `make <target>`: the target exists. `scripts/…`: the script exists and is executable.
//! - `kubectl`, `helm`, `docker`, `curl` and the like need a cluster, a registry or a server: the
//!   files of this repository they name must exist.
//! - anything else in an `sh` block fails the test, so a new kind of command gets classified.
//!
//! Synopsis blocks (no language) and inline code spans that start with one of the binaries are
//! checked against `--help`; the `serve` flag table of docs/server.md against `serve --help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_e2e::{operator_binary, repo_root, server_binary};

/// The documents a user reads, relative to the repository root.
fn documents() -> Vec<String> {
    let mut files: Vec<String> = [
        "README.md",
        "operator/README.md",
        "tests/README.md",
        "tests/cluster/README.md",
        "tests/schemas/upstream/README.md",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| format!("docs/{}", path.file_name().expect("name").to_string_lossy()))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced block: its language and its logical lines (continuations joined), each with its line
/// number.
#[derive(Debug)]
struct Block {
    language: String,
    lines: Vec<(usize, String)>,
}

/// A block being read, and the indentation of its fence.
struct OpenBlock {
    block: Block,
    indent: usize,
}

/// The fenced blocks of a Markdown text (indented ones in lists too).
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<OpenBlock> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(language)) => {
                open = Some(OpenBlock {
                    block: Block {
                        language: language.trim().to_owned(),
                        lines: Vec::new(),
                    },
                    indent: line.len() - trimmed.len(),
                });
            }
            (Some(_), Some(_)) => blocks.extend(open.take().map(|o| o.block)),
            (Some(OpenBlock { block, indent }), None) => {
                let content = line.get(*indent..).unwrap_or(line.trim_start()).to_owned();
                match block.lines.last_mut() {
                    Some((_, last)) if last.ends_with('\\') => {
                        last.pop();
                        last.push(' ');
                        last.push_str(content.trim_start());
                    }
                    _ => block.lines.push((number, content)),
                }
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The inline code spans outside fenced blocks, each with its line number.
fn inline_spans(text: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let parts: Vec<&str> = line.split('`').collect();
        for (i, part) in parts.iter().enumerate() {
            if i % 2 == 1 && i + 1 < parts.len() {
                spans.push((index + 1, (*part).to_owned()));
            }
        }
    }
    spans
}

/// The words of one shell command line, quotes removed but remembered (a quoted word keeps a
/// leading `"`-free text), up to a comment, a pipe, a redirection or a command separator.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    // Depth of `$(…)` and `<(…)`: one word however many spaces it holds.
    let mut depth = 0usize;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '(') if word.ends_with(['$', '<']) || depth > 0 => {
                depth += 1;
                word.push(c);
            }
            (None, ')') if depth > 0 => {
                depth -= 1;
                word.push(c);
            }
            (None, c) if depth > 0 => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let end = words
        .iter()
        .position(|w| ["|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1"].contains(&w.as_str()) || w.starts_with('>'))
        .unwrap_or(words.len());
    words.truncate(end);
    // Leading environment assignments (`IMAGE_REGISTRY=... make image`).
    let start = words
        .iter()
        .position(|w| !(w.contains('=') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())))
        .unwrap_or(words.len());
    words.drain(..start);
    words
}

/// A word that stands for something the reader fills in.
fn is_placeholder(word: &str) -> bool {
    word.contains(['$', '<', '>', '[', ']', '(', ')', '{', '}'])
        || word.contains("...")
        || word.contains('…')
        || word.contains('|')
        || (word.len() <= 8 && !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()))
}

/// The repository's top-level directories: a word starting with one of them is a path in it.
const REPOSITORY_DIRS: [&str; 10] = [
    "config/",
    "charts/",
    "crds/",
    "docs/",
    "images/",
    "scripts/",
    "tests/",
    "operator/",
    "server/",
    ".github/",
];

fn is_repository_path(word: &str) -> bool {
    REPOSITORY_DIRS.iter().any(|dir| word.starts_with(dir))
}

/// `word` with a `*` in its last component expanded against the repository, sorted.
fn expand(word: &str) -> Vec<String> {
    let Some((dir, pattern)) = word.rsplit_once('/').filter(|(_, p)| p.contains('*')) else {
        return vec![word.to_owned()];
    };
    let (prefix, suffix) = pattern.split_once('*').expect("a *");
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join(dir))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(prefix) && name.ends_with(suffix) && name.len() >= pattern.len() - 1)
                .map(|name| format!("{dir}/{name}"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn exists(word: &str) -> bool {
    let expanded = expand(word);
    !expanded.is_empty() && expanded.iter().all(|path| repo_root().join(path).exists())
}

/// Which binary a command line runs, and its arguments.
fn binary_and_arguments(words: &[String]) -> Option<(&'static str, Vec<String>)> {
    let first = words.first()?.as_str();
    match first {
        "palisade-server" => Some(("palisade-server", words[1..].to_vec())),
        "palisade-operator" => Some(("palisade-operator", words[1..].to_vec())),
        "cargo" if words.get(1).map(String::as_str) == Some("run") => {
            let package = words
                .iter()
                .position(|w| w == "-p" || w == "--package")
                .map(|i| words[i + 1].as_str())?;
            let arguments = words
                .iter()
                .position(|w| w == "--")
                .map_or_else(Vec::new, |i| words[i + 1..].to_vec());
            match package {
                "palisade-server" => Some(("palisade-server", arguments)),
                "palisade-operator" => Some(("palisade-operator", arguments)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What `--help` says of one (sub)command.
#[derive(Debug, Clone, Default)]
struct Help {
    commands: BTreeSet<String>,
    options: BTreeSet<String>,
    env: BTreeSet<String>,
}

/// The binaries and their parsed `--help`, per subcommand path.
struct Binaries {
    paths: BTreeMap<&'static str, PathBuf>,
    helps: BTreeMap<(String, Vec<String>), Help>,
}

impl Binaries {
    fn new() -> Self {
        Self {
            paths: BTreeMap::from([
                ("palisade-server", server_binary()),
                ("palisade-operator", operator_binary()),
            ]),
            helps: BTreeMap::new(),
        }
    }

    fn path(&self, binary: &str) -> &Path {
        &self.paths[binary]
    }

    fn help(&mut self, binary: &str, path: &[String]) -> Help {
        let key = (binary.to_owned(), path.to_vec());
        if let Some(help) = self.helps.get(&key) {
            return help.clone();
        }
        let output = Command::new(self.path(binary))
            .args(path)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(output.status.success(), "{binary} {path:?} --help failed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut help = Help::default();
        let mut section = "";
        for line in text.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            let trimmed = line.trim_start();
            if section == "Commands:" && line.starts_with("  ") {
                if let Some(name) = trimmed.split_whitespace().next() {
                    help.commands.insert(name.to_owned());
                }
            } else if section == "Options:" && trimmed.starts_with('-') {
                for word in trimmed.split([' ', ',']) {
                    if word.starts_with('-') && word.len() > 1 {
                        help.options.insert(word.split('=').next().unwrap_or(word).to_owned());
                    }
                }
            }
            let mut rest = line;
            while let Some(at) = rest.find("[env: ") {
                rest = &rest[at + 6..];
                help.env.insert(rest.split('=').next().unwrap_or_default().to_owned());
            }
        }
        self.helps.insert(key, help.clone());
        help
    }
}

/// Problems with a command's subcommand and flags, checked against `--help`; and the subcommand
/// path.
fn check_against_help(binaries: &mut Binaries, binary: &str, arguments: &[String]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut help = binaries.help(binary, &path);
    for word in arguments {
        if word.starts_with('-') || help.commands.is_empty() {
            break;
        }
        if help.commands.contains(word) {
            path.push(word.clone());
            help = binaries.help(binary, &path);
        } else {
            problems.push(format!("{binary} {}: no subcommand {word:?}", path.join(" ")));
            break;
        }
    }
    // After `--` come the words of another command (`serve ... -- COMMAND ARGS`), not options.
    for word in arguments.iter().take_while(|w| w.as_str() != "--") {
        for piece in word.split(['[', ']', '|', '(', ')']) {
            let flag = piece.split('=').next().unwrap_or_default();
            let long = flag.starts_with("--") && flag.len() > 2;
            let short = flag.len() == 2 && flag.starts_with('-') && flag.as_bytes()[1].is_ascii_alphabetic();
            if (long || short) && !help.options.contains(flag) {
                problems.push(format!("{binary} {}: no option {flag}", path.join(" ")));
            }
        }
    }
    (problems, path)
}

/// The outcome of running a documented command.
struct Ran {
    stdout: String,
}

fn run_command(binaries: &Binaries, binary: &str, arguments: &[String], path: &[String]) -> Result<Ran, String> {
    let expanded: Vec<String> = arguments
        .iter()
        .flat_map(|w| {
            if is_repository_path(w) {
                expand(w)
            } else {
                vec![w.clone()]
            }
        })
        .collect();
    let output = Command::new(binaries.path(binary))
        .args(&expanded)
        .current_dir(repo_root())
        .env_remove("PALISADE_POLICY_FILE")
        .env_remove("PALISADE_CLUSTER_DOMAIN")
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let explain_denied = path == ["policy", "explain"] && output.status.code() == Some(1) && stderr.is_empty();
    if !(output.status.success() || explain_denied) || stderr.contains("error") {
        return Err(format!("exit {:?}\n{stdout}{stderr}", output.status.code()));
    }
    if stdout.is_empty() {
        return Err("printed nothing".into());
    }
    Ok(Ran { stdout })
}

fn makefile_targets() -> BTreeSet<String> {
    std::fs::read_to_string(repo_root().join("Makefile"))
        .expect("Makefile")
        .lines()
        .filter_map(|line| line.split_once(':').map(|(target, _)| target))
        .filter(|target| {
            !target.is_empty()
                && target
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

/// Commands that need something this test does not have (a cluster, a registry, a server, a
/// token); only the repository files they name are checked.
const EXTERNAL: [&str; 9] = [
    "kubectl", "helm", "docker", "curl", "argocd", "jq", "openssl", "python3", "grep",
];
/// Shell syntax around commands.
const SHELL: [&str; 8] = ["set", "for", "do", "done", "if", "then", "fi", "export"];

struct Checker {
    binaries: Binaries,
    targets: BTreeSet<String>,
    problems: Vec<String>,
    ran: usize,
    checked: usize,
}

impl Checker {
    /// Checks one command line. `runnable`: from an `sh` block. Returns the output of a command
    /// that ran.
    fn command(&mut self, at: &str, line: &str, runnable: bool) -> Option<String> {
        let words = words(line);
        let first = words.first().map(String::as_str)?;
        if let Some((binary, arguments)) = binary_and_arguments(&words) {
            let (problems, path) = check_against_help(&mut self.binaries, binary, &arguments);
            self.checked += 1;
            if !problems.is_empty() {
                self.problems
                    .extend(problems.into_iter().map(|p| format!("{at}: `{line}`: {p}")));
                return None;
            }
            let long_running = matches!(path.first().map(String::as_str), Some("serve" | "run"));
            let concrete = arguments
                .iter()
                .all(|w| !is_placeholder(w) && (!(w.contains('/') || w.ends_with(".yaml")) || exists(w)));
            if runnable && concrete && !long_running {
                self.ran += 1;
                match run_command(&self.binaries, binary, &arguments, &path) {
                    Ok(ran) => return Some(ran.stdout),
                    Err(why) => self.problems.push(format!("{at}: `{line}` failed: {why}")),
                }
            }
            return None;
        }
        match first {
            "make" => {
                for target in words[1..].iter().filter(|w| !w.starts_with('-') && !w.contains('=')) {
                    self.checked += 1;
                    if !self.targets.contains(target) {
                        self.problems.push(format!("{at}: `{line}`: no make target {target:?}"));
                    }
                }
            }
            script if script.starts_with("scripts/") => {
                self.checked += 1;
                let path = repo_root().join(script);
                let executable = std::fs::metadata(&path).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt as _;
                    m.permissions().mode() & 0o111 != 0
                });
                // Run as a command, it must be executable; named in prose, it must exist.
                if !(executable || !runnable && path.exists()) {
                    self.problems
                        .push(format!("{at}: `{line}`: {script} is not an executable script"));
                }
            }
            external if EXTERNAL.contains(&external) => {
                for word in words.iter().filter(|w| is_repository_path(w) && !is_placeholder(w)) {
                    self.checked += 1;
                    if !exists(word) {
                        self.problems.push(format!("{at}: `{line}`: {word} does not exist"));
                    }
                }
            }
            "cargo" | "palisade-server" | "palisade-operator" => {}
            // Runs in a pod's upstream container (its command line is the shim's own unit test).
            shim if shim.ends_with("/palisade-stdio-shim") => {}
            shell if SHELL.contains(&shell) => {}
            other if runnable => self.problems.push(format!(
                "{at}: `{line}`: unclassified command {other:?} (add it to this test)"
            )),
            _ => {}
        }
        None
    }
}

#[test]
fn every_documented_command_works_as_written() {
    let mut checker = Checker {
        binaries: Binaries::new(),
        targets: makefile_targets(),
        problems: Vec::new(),
        ran: 0,
        checked: 0,
    };
    for document in documents() {
        let text = std::fs::read_to_string(repo_root().join(&document)).expect("read");
        let blocks = blocks(&text);
        for (index, block) in blocks.iter().enumerate() {
            let shell = ["sh", "bash", "shell"].contains(&block.language.as_str());
            let synopsis = block.language.is_empty() || block.language == "text";
            if !shell && !synopsis {
                continue;
            }
            let mut outputs = Vec::new();
            for (number, line) in &block.lines {
                let at = format!("{document}:{number}");
                // A synopsis block holds commands and their output; only the binaries' lines count.
                let binary_line = words(line)
                    .first()
                    .is_some_and(|w| w.starts_with("palisade-") || w == "cargo");
                if shell || binary_line {
                    outputs.extend(checker.command(&at, line, shell));
                }
            }
            // The output a document shows right after a command is the output it gives.
            if let Some(next) = blocks.get(index + 1).filter(|b| b.language.is_empty()) {
                let shown: String = next.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
                for output in &outputs {
                    if output.lines().next() == shown.lines().next() && *output != shown {
                        let at = next.lines.first().map_or(0, |(n, _)| *n);
                        checker.problems.push(format!(
                            "{document}:{at}: the output shown is not what the command above prints:\n{output}"
                        ));
                    }
                }
            }
        }
        for (number, span) in inline_spans(&text) {
            let first = words(&span).first().cloned().unwrap_or_default();
            if first.starts_with("palisade-server") && first != "palisade-server"
                || first.starts_with("palisade-operator") && first != "palisade-operator"
            {
                continue; // a name such as palisade-operator-metrics
            }
            if ["palisade-server", "palisade-operator", "make"].contains(&first.as_str())
                || first.starts_with("scripts/")
            {
                if first == "make" && words(&span).len() < 2 {
                    continue;
                }
                checker.command(&format!("{document}:{number}"), &span, false);
            }
        }
    }
    assert!(checker.problems.is_empty(), "{}", checker.problems.join("\n"));
    // The test must have had something to do: the README's and docs/server.md's examples run.
    assert!(checker.ran >= 5, "ran only {} documented commands", checker.ran);
    assert!(
        checker.checked >= 40,
        "checked only {} documented commands",
        checker.checked
    );
}

#[test]
fn the_serve_flag_table_is_the_serve_command() {
    let text = std::fs::read_to_string(repo_root().join("docs/server.md")).expect("docs/server.md");
    let table = text
        .split("## `serve` flags")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/server.md has a `serve` flags section");
    let mut binaries = Binaries::new();
    let help = binaries.help("palisade-server", &["serve".to_owned()]);
    // Every flag and variable the table names is one `serve --help` lists.
    let mut documented = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for flag in cells[1].split(", ") {
            let flag = flag.trim_matches('`');
            assert!(help.options.contains(flag), "docs/server.md: serve has no {flag}");
            documented.insert(flag.to_owned());
        }
        for env in cells[2].split(", ") {
            let env = env.trim_matches('`');
            assert!(help.env.contains(env), "docs/server.md: serve reads no {env}");
        }
    }
    assert!(documented.len() >= 15, "{documented:?}");
}

#[test]
fn the_word_splitter_reads_commands_as_a_shell_would() {
    assert_eq!(words("IMAGE_REGISTRY=r make image   # builds both"), ["make", "image"]);
    assert_eq!(
        words("palisade-server policy compile x.yaml > policy.yaml"),
        ["palisade-server", "policy", "compile", "x.yaml"]
    );
    assert_eq!(
        words("kubectl get mcps -o jsonpath='{.status.policyHash}{\"\\n\"}' | grep x"),
        ["kubectl", "get", "mcps", "-o", "jsonpath={.status.policyHash}{\"\\n\"}"]
    );
    assert_eq!(
        words("palisade-server policy explain --policy-file <(kubectl get cm -o yaml) --tool t"),
        [
            "palisade-server",
            "policy",
            "explain",
            "--policy-file",
            "<(kubectl get cm -o yaml)",
            "--tool",
            "t"
        ]
    );
    assert!(is_placeholder("FILE..."));
    assert!(is_placeholder("\"$team\"*.yaml") || is_placeholder("$team*.yaml"));
    assert!(!is_placeholder("config/samples/company-info.yaml"));
    assert_eq!(
        expand("config/samples/*.yaml"),
        [
            "config/samples/company-info.yaml",
            "config/samples/everything-container.yaml",
            "config/samples/filesystem-proxy.yaml",
            "config/samples/sso-docs.yaml"
        ]
    );
}
