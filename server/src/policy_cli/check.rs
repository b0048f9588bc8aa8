//! `policy check`: every PolicyDocument, and every McpServer with the policies that bind it,
//! validated as the operator validates them, with every policy test run.

use std::fmt::Write as _;
use std::path::PathBuf;

use palisade_crds::Policy;
use palisade_crds::verdicts::validate_all;

use super::{ManifestArgs, Outcome, PolicyCliError, read_manifests};

/// Checks the PolicyDocuments and manifests in `files`. The report (`ok`, `pass` lines) is the
/// outcome's output; refused references, unbound policies and the compiler's warnings are its
/// warnings; invalid objects and failing tests its errors.
pub fn check(files: &[PathBuf], args: &ManifestArgs) -> Outcome {
    let manifests = match read_manifests(files, &args.namespace) {
        Ok(manifests) => manifests,
        Err(error) => return Outcome::failed(error),
    };
    if manifests.is_empty() {
        return Outcome::failed(PolicyCliError::NothingToCheck);
    }
    let mut outcome = Outcome::default();
    for (origin, document) in &manifests.policy_documents {
        match Policy::new(document.clone()) {
            Ok(policy) => {
                let _ = writeln!(
                    outcome.output,
                    "ok      {origin}: PolicyDocument {} ({} tools)",
                    policy.hash(),
                    policy.tools().len()
                );
            }
            Err(problems) => outcome.errors.push(PolicyCliError::InvalidPolicyDocument {
                origin: origin.clone(),
                problems,
            }),
        }
    }
    if manifests.servers.is_empty() && manifests.policies.is_empty() {
        return outcome;
    }
    let verdicts = validate_all(&manifests, &args.compile_options());
    for validated in &verdicts.valid {
        let _ = writeln!(
            outcome.output,
            "ok      McpServer {}: {} policies, {}",
            validated.key(),
            validated.bound_policies().len(),
            validated.policy_hash()
        );
        // NB: a server whose tests fail is not valid, so every test here passed.
        for test in &validated.compiled().tests {
            let _ = writeln!(outcome.output, "pass    {}: {}", test.policy, test.name);
        }
    }
    outcome.warnings = verdicts.warnings;
    if !verdicts.invalid.is_empty() {
        outcome.errors.push(verdicts.invalid.into());
    }
    outcome
}
