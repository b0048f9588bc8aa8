//! `docs/crd-reference.md` is what `palisade-operator crds --reference` generates from the CRDs.

use std::path::Path;

use palisade_operator::crd_reference::{REFERENCE_FILE, reference};

#[test]
fn committed_reference_matches_the_crds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(REFERENCE_FILE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = reference();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} is out of date with the CRDs: run `make crds` and commit the result\n\
             first difference at line {}:\n  committed: {}\n  generated: {}",
            path.display(),
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}
