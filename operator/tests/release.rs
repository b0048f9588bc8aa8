//! `.github/workflows/release.yml` cannot run here (no GitHub, no registry, no container engine),
//! so this checks what it must agree with: on a `v*` tag it builds every image target of
//! images/Dockerfile for linux/amd64 and linux/arm64 with docker buildx, with an SBOM, pushes
//! them to exactly the repositories the chart, the kustomize install and the operator default
//! to, signs them with cosign keyless, and packages, pushes and signs charts/palisade.

mod support;

use std::collections::BTreeSet;

use palisade_operator::settings::DEFAULT_SERVER_IMAGE;
use serde_json::Value;
use support::{read_repo_file as read, yaml_documents};

const WORKFLOW: &str = ".github/workflows/release.yml";

fn workflow() -> Value {
    let mut documents = yaml_documents(&read(WORKFLOW));
    assert_eq!(documents.len(), 1, "{WORKFLOW}: one YAML document");
    documents.remove(0)
}

/// The `run` scripts of a job's steps, joined.
fn scripts(workflow: &Value, job: &str) -> String {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job} has no steps"))
        .iter()
        .filter_map(|step| step["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `uses` of a job's steps.
fn actions(workflow: &Value, job: &str) -> Vec<String> {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job} has no steps"))
        .iter()
        .filter_map(|step| step["uses"].as_str())
        .map(|uses| uses.split('@').next().unwrap_or_default().to_owned())
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// The stages of images/Dockerfile that are images: named stages no other stage copies from.
fn dockerfile_targets() -> BTreeSet<String> {
    let dockerfile = read("images/Dockerfile");
    let mut named = BTreeSet::new();
    let mut copied_from = BTreeSet::new();
    for line in dockerfile.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["FROM", .., as_, name] = words[..]
            && as_.eq_ignore_ascii_case("as")
        {
            named.insert(name.to_owned());
        }
        for word in words {
            if let Some(stage) = word.strip_prefix("--from=") {
                copied_from.insert(stage.to_owned());
            }
        }
    }
    &named - &copied_from
}

#[test]
fn a_v_tag_and_nothing_else_starts_a_release() {
    let workflow = workflow();
    // NB: YAML 1.1 readers take a bare `on` for `true`; GitHub and this reader take it as the key.
    let on = &workflow["on"];
    assert_eq!(strings(&on["push"]["tags"]), BTreeSet::from(["v*".to_owned()]));
    assert_eq!(on.as_object().map(|o| o.len()), Some(1), "{on}");
    assert!(on["push"].get("branches").is_none());
    // The tag must be the version the images and the chart are built with.
    let check = scripts(&workflow, "version");
    for source in ["Cargo.toml", "charts/palisade/Chart.yaml"] {
        assert!(check.contains(source), "{check}");
    }
}

#[test]
fn it_builds_every_dockerfile_target_for_amd64_and_arm64_with_buildx_and_an_sbom() {
    let targets = dockerfile_targets();
    assert_eq!(targets, BTreeSet::from(["operator".to_owned(), "server".to_owned()]));
    let workflow = workflow();
    let build = &workflow["jobs"]["build"];
    assert_eq!(strings(&build["strategy"]["matrix"]["target"]), targets);
    assert_eq!(
        strings(&build["strategy"]["matrix"]["platform"]),
        BTreeSet::from(["linux/amd64".to_owned(), "linux/arm64".to_owned()])
    );
    assert_eq!(
        strings(&workflow["jobs"]["publish"]["strategy"]["matrix"]["target"]),
        targets
    );
    let script = scripts(&workflow, "build");
    for expected in [
        "docker buildx build",
        "--file images/Dockerfile",
        "--target \"$TARGET\"",
        "--platform \"$PLATFORM\"",
        "--sbom=true",
        "push=true",
    ] {
        assert!(script.contains(expected), "build: no {expected:?} in\n{script}");
    }
    assert!(actions(&workflow, "build").contains(&"docker/setup-buildx-action".to_owned()));
    let publish = scripts(&workflow, "publish");
    assert!(publish.contains("docker buildx imagetools create"), "{publish}");
    assert!(publish.contains("linux/amd64,linux/arm64"), "{publish}");
}

#[test]
fn the_images_go_where_the_chart_kustomize_and_the_operator_look_for_them() {
    let workflow = workflow();
    let prefix = workflow["env"]["IMAGE_PREFIX"].as_str().expect("env.IMAGE_PREFIX");
    let pushed: BTreeSet<String> = dockerfile_targets().iter().map(|t| format!("{prefix}{t}")).collect();

    let values = &yaml_documents(&read("charts/palisade/values.yaml"))[0];
    let chart: BTreeSet<String> = [
        &values["image"]["repository"],
        &values["mcpServers"]["image"]["repository"],
    ]
    .iter()
    .map(|v| v.as_str().expect("repository").to_owned())
    .collect();
    assert_eq!(
        pushed, chart,
        "the chart's image.repository and mcpServers.image.repository"
    );

    let kustomization = &yaml_documents(&read("config/manager/kustomization.yaml"))[0];
    let operator_image = kustomization["images"][0]["name"].as_str().expect("images[0].name");
    assert!(pushed.contains(operator_image), "{operator_image}");
    let (server_repository, _) = DEFAULT_SERVER_IMAGE.rsplit_once(':').expect("tagged");
    assert!(pushed.contains(server_repository), "{server_repository}");
}

#[test]
fn images_and_chart_are_signed_keyless_and_the_chart_is_published() {
    let workflow = workflow();
    for job in ["publish", "chart"] {
        assert_eq!(
            workflow["jobs"][job]["permissions"]["id-token"], "write",
            "{job}: cosign keyless signing needs the OIDC token"
        );
        assert!(actions(&workflow, job).contains(&"sigstore/cosign-installer".to_owned()));
        let script = scripts(&workflow, job);
        assert!(script.contains("cosign sign --yes"), "{job}: {script}");
        // Keyless: no key file and no key from a secret.
        assert!(!script.contains("--key"), "{job}: {script}");
    }
    let chart = scripts(&workflow, "chart");
    assert!(chart.contains("helm package charts/palisade"), "{chart}");
    assert!(chart.contains("helm push"), "{chart}");
    // No job may write more than packages (the registry) and its OIDC token.
    for (name, job) in workflow["jobs"].as_object().expect("jobs") {
        if let Some(permissions) = job["permissions"].as_object() {
            for (scope, level) in permissions {
                assert!(
                    level == "read" || ["packages", "id-token"].contains(&scope.as_str()),
                    "{name}: {scope}: {level}"
                );
            }
        }
    }
    assert_eq!(workflow["permissions"]["contents"], "read");
}
