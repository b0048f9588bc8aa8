//! images/Dockerfile and .dockerignore, checked without Docker: the base images are pinned, the
//! binaries are built with `cargo build --release --locked`, each final stage runs its binary as
//! user 65532 (the user the operator's pods run as), and the build context holds the workspace.

mod support;

use palisade_operator::build::pod::RUN_AS;
use palisade_operator::ports;
use support::{read_repo_file as read, repo_root};

const DOCKERFILE: &str = "images/Dockerfile";
/// The static stdio shim the server image also holds.
const SHIM: &str = "palisade-stdio-shim";

/// One `FROM` and the instructions after it, as `(KEYWORD, arguments)`.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of every instruction `keyword`.
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    }

    /// The arguments of the one instruction `keyword`.
    fn one(&self, keyword: &str) -> &str {
        match self.all(keyword)[..] {
            [arguments] => arguments,
            ref found => panic!(
                "stage {:?}: {} {keyword} instructions, expected one",
                self.name,
                found.len()
            ),
        }
    }
}

/// The stages of a Dockerfile (comments dropped, continuation lines joined).
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let arguments = arguments.split_whitespace().collect::<Vec<_>>().join(" ");
        if keyword == "FROM" {
            let words: Vec<&str> = arguments.split(' ').filter(|w| !w.starts_with("--")).collect();
            let (image, name) = match words[..] {
                [image] => (image, None),
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => (image, Some(name.to_owned())),
                _ => panic!("FROM {arguments}: expected `FROM image [AS name]`"),
            };
            stages.push(Stage {
                image: image.to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before the first FROM"))
                .instructions
                .push((keyword, arguments));
        }
    }
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{DOCKERFILE} has no stage {name}"))
}

/// An exec-form (JSON array) instruction's words.
fn exec_form(keyword: &str, arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{keyword} {arguments}: not the exec (JSON array) form: {e}"))
}

/// The names of the binaries of a package: its `[[bin]]` targets, or the package name when it
/// has `src/main.rs` and no `[[bin]]` (Cargo's default).
fn binaries(package_dir: &str) -> Vec<String> {
    let manifest = read(&format!("{package_dir}/Cargo.toml"));
    let mut section = "";
    let mut package_name = None;
    let mut bins = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some(value) = line.strip_prefix("name = \"").and_then(|v| v.strip_suffix('"')) else {
            continue;
        };
        match section {
            "[package]" => package_name = Some(value.to_owned()),
            "[[bin]]" => bins.push(value.to_owned()),
            _ => {}
        }
    }
    if bins.is_empty() && repo_root().join(package_dir).join("src/main.rs").is_file() {
        bins.extend(package_name);
    }
    bins
}

#[test]
fn base_images_are_pinned_to_a_tag_or_digest() {
    let stages = stages(&read(DOCKERFILE));
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in &stages {
        let image = stage.image.as_str();
        if names.contains(&image) {
            continue;
        }
        let (reference, digest) = image.split_once('@').unwrap_or((image, ""));
        let last = reference.rsplit('/').next().expect("a name");
        let tag = last.split_once(':').map(|(_, tag)| tag);
        assert!(
            digest.starts_with("sha256:") || tag.is_some_and(|t| !t.is_empty() && t != "latest"),
            "FROM {image}: pin the base image to a tag (not latest) or a digest"
        );
    }
}

#[test]
fn each_target_runs_its_binary_as_the_pods_user() {
    let stages = stages(&read(DOCKERFILE));
    let build = stage(&stages, "build");
    let cargo = build
        .all("RUN")
        .into_iter()
        .find(|run| run.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(
        cargo.contains("cargo build --release --locked "),
        "the binaries are built from Cargo.lock as it is, in release: {cargo}"
    );
    let user = format!("{RUN_AS}:{RUN_AS}");
    for (target, package_dir, subcommand, exposed) in [
        ("operator", "operator", "run", vec![ports::MCP]),
        ("server", "server", "serve", vec![ports::MCP, ports::METRICS]),
    ] {
        let stage = stage(&stages, target);
        let binary = format!("palisade-{target}");
        assert!(
            binaries(package_dir).contains(&binary),
            "{package_dir}/Cargo.toml builds no binary {binary}"
        );
        assert!(
            cargo.contains(&format!("-p {binary}")) && cargo.contains(&format!("target/release/{binary}")),
            "the build stage builds and keeps {binary}: {cargo}"
        );
        assert!(
            !stages.iter().any(|s| s.name.as_deref() == Some(stage.image.as_str())),
            "stage {target} starts from a runtime base image, not from another stage"
        );
        // Only the binary is added to the base image (the server's with the stdio shim, which
        // its pods' init containers copy into a stdio upstream's container).
        let path = format!("/usr/local/bin/{binary}");
        let mut copied = vec![format!("--from=build /out/{binary} {path}")];
        if target == "server" {
            copied.push(format!("--from=build /out/{SHIM} /usr/local/bin/{SHIM}"));
            assert!(
                cargo.contains(&format!("-p {SHIM} --bin {SHIM} -- -C target-feature=+crt-static")),
                "the shim is linked statically: {cargo}"
            );
        }
        assert_eq!(stage.all("COPY"), copied, "stage {target}");
        assert_eq!(stage.all("ADD"), Vec::<&str>::new(), "stage {target}");
        assert_eq!(stage.all("RUN"), Vec::<&str>::new(), "stage {target}");
        // A numeric user: the kubelet can check runAsNonRoot without /etc/passwd.
        assert_eq!(stage.one("USER"), user, "stage {target}");
        assert_eq!(
            exec_form("ENTRYPOINT", stage.one("ENTRYPOINT")),
            [path],
            "stage {target}"
        );
        assert_eq!(exec_form("CMD", stage.one("CMD")), [subcommand], "stage {target}");
        let ports: Vec<String> = exposed.iter().map(i32::to_string).collect();
        assert_eq!(stage.one("EXPOSE"), ports.join(" "), "stage {target}");
    }
}

#[test]
fn the_build_context_holds_every_workspace_member_and_no_build_output() {
    let manifest = read("Cargo.toml");
    let (_, members) = manifest.split_once("members = [").expect("workspace members");
    let (members, _) = members.split_once(']').expect("the end of members");
    let members: Vec<&str> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        ".dockerignore starts by excluding everything (an allow-list)"
    );
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(
            patterns.contains(&format!("!{needed}").as_str()),
            ".dockerignore must let in {needed}"
        );
    }
    for member in &members {
        // Let in by its own line or by a parent's (`!tests/` lets in `tests/cluster`).
        let let_in = patterns.iter().any(|p| {
            p.strip_prefix('!')
                .is_some_and(|allowed| format!("{member}/").starts_with(allowed))
        });
        assert!(
            let_in,
            ".dockerignore must let in {member}/: cargo loads every workspace member"
        );
        let excluded = patterns
            .iter()
            .any(|p| !p.starts_with('!') && *p != "*" && format!("{member}/").starts_with(p));
        assert!(!excluded, ".dockerignore must not exclude {member}/ again");
    }
    assert!(patterns.contains(&"**/target/"), ".dockerignore keeps target/ out");
}
