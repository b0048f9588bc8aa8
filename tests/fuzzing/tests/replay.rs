//! Every committed seed and every input that once crashed a fuzz target, replayed through the
//! target's entry point in `make test`: a fixed crash stays fixed without a nightly toolchain.

use std::path::{Path, PathBuf};

use palisade_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep" && n != "README.md"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_replays_without_a_crash() {
    let mut replayed = 0;
    for (name, entry) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("read input");
            if let Err(panic) = std::panic::catch_unwind(|| entry(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{name}: {} crashes: {message}", file.display());
            }
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} inputs through {} targets", TARGETS.len());
}

#[test]
fn every_target_has_a_cargo_fuzz_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap_or_else(|_| panic!("{} is missing", source.display()));
        assert!(
            text.contains(&format!("palisade_fuzzing::{name}")),
            "{} does not call its entry",
            source.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}

#[test]
fn the_credential_seeds_start_from_a_token_and_a_key_that_verify() {
    let seeds = fuzz_dir().join("corpus/credential");
    let valid = std::fs::read_to_string(seeds.join("valid_token")).expect("valid_token seed");
    assert!(
        palisade_fuzzing::bearer_is_accepted(&valid),
        "the valid_token seed no longer verifies"
    );
    let wrong = std::fs::read_to_string(seeds.join("wrong_key")).expect("wrong_key seed");
    assert!(!palisade_fuzzing::bearer_is_accepted(&wrong));
    let key = std::fs::read_to_string(seeds.join("api_key")).expect("api_key seed");
    assert_eq!(key, palisade_fuzzing::API_KEY);
}
