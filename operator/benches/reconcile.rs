//! Criterion benchmarks of the pure reconcile steps of one McpServer: `validate` (binds nothing,
//! compiles the bound policies and runs their tests) and `build_children` (every child object).
//! Figures go to docs/benchmarks.md (`make bench`).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_crds::{McpAccessPolicy, McpServer};
use palisade_operator::render::Inputs;
use palisade_operator::{Settings, build_children, validate};

mod support;

/// Times validate alone and validate + build_children of `server` with `policies`.
fn bench_server(c: &mut Criterion, label: &str, server: &McpServer, policies: &[McpAccessPolicy]) {
    let settings = Settings::default();
    let bound: Vec<&McpAccessPolicy> = policies.iter().collect();
    let validated = validate(server, &bound, &settings).unwrap_or_else(|e| panic!("{label}: {e}"));
    let children = build_children(&validated, &settings).iter().count();
    drop(validated);
    c.bench_function(&format!("operator validate: {label}"), |b| {
        b.iter(|| validate(black_box(server), black_box(&bound), &settings).expect("valid"))
    });
    c.bench_function(
        &format!("operator validate + build_children ({children} objects): {label}"),
        |b| {
            b.iter(|| {
                let validated = validate(black_box(server), black_box(&bound), &settings).expect("valid");
                build_children(&validated, &settings)
            })
        },
    );
}

fn reconcile(c: &mut Criterion) {
    let sample = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/company-info.yaml"
    ));
    let inputs = Inputs::read(&[sample], "team-a").expect("company-info sample");
    bench_server(c, "company-info sample", &inputs.servers[0], &inputs.policies);

    let shape = support::LARGE;
    let server = support::server(&shape, 0, "team-a");
    let policies: Vec<McpAccessPolicy> = (0..shape.policies)
        .map(|p| support::policy(&shape, 0, p, "team-a"))
        .collect();
    bench_server(c, "50 tools, 10 collections, 3 policies x 50 roles", &server, &policies);
}

criterion_group!(benches, reconcile);
criterion_main!(benches);
