# Palisade: every command a developer or CI needs. `make help` lists them.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help test lint fmt crds bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

test: lint ## Format check, clippy, and every test
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate the CRD YAML in crds/ from the Rust types
	$(CARGO) run -q -p palisade-operator -- crds --out-dir crds

bench: ## Criterion benchmarks; figures written to docs/benchmarks.md
	$(CARGO) bench -p palisade-crds --bench evaluator -- --noplot
	python3 scripts/bench_report.py
