# Palisade: every command a developer or CI needs. `make help` lists them.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
E2E_DEPS := target/e2e-deps
DEV := target/dev
SERVER := target/debug/palisade-server
# The commit `make bench` loads side by side with the current server: the last one before the
# server's hardening (issue 13), built once by scripts/build_baseline.sh.
BENCH_BASELINE ?= bbf686a

# CI builds everything once on a fresh machine with little disk: incremental compilation (several
# GB of caches that only a second build would use) is off there.
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: help test test-deps lint fmt crds bench profile run e2e-deps e2e chart-test image cluster-build cluster cluster-down fuzz soak

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

test: test-deps lint e2e-deps cluster-build ## Format check, clippy, and every test (unit, property, end-to-end with real clients, the cluster suite)
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked
	$(CARGO) build --locked -p palisade-server
	$(E2E_DEPS)/venv/bin/python scripts/soak.py --server $(SERVER) --duration 120

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate the CRD YAML in crds/, its copies in the chart, and docs/crd-reference.md
	$(CARGO) run -q -p palisade-operator -- crds --out-dir crds --reference docs/crd-reference.md
	scripts/sync_chart_crds.sh

bench: e2e-deps cluster-build ## Criterion, load and API-cost benchmarks; figures written to docs/benchmarks.md
	$(CARGO) bench -p palisade-crds --bench evaluator -- --noplot
	$(CARGO) bench -p palisade-operator --bench reconcile -- --noplot
	$(CARGO) run --release -q -p palisade-operator --example cache_memory > target/operator-cache-memory.json
	python3 scripts/bench_report.py
	PALISADE_BENCH_REPORT=$(CURDIR)/docs/benchmarks.md $(CARGO) test --locked -p palisade-cluster --test cluster -- event_cost
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --locked -p palisade-server
	$(E2E_DEPS)/venv/bin/python scripts/load_bench.py --baseline-commit $(BENCH_BASELINE)
	$(E2E_DEPS)/venv/bin/python scripts/proxy_bench.py
	$(E2E_DEPS)/venv/bin/python scripts/trace_bench.py

soak: e2e-deps ## 30 minutes of mixed load against the release server; figures in docs/soak.md
	$(CARGO) build --release --locked -p palisade-server
	$(E2E_DEPS)/venv/bin/python scripts/soak.py --server target/release/palisade-server --duration 1800 --report docs/soak.md

fuzz: ## Run every cargo-fuzz target for FUZZ_SECONDS (300) each (nightly); totals in docs/fuzzing.md
	scripts/fuzz.sh

profile: e2e-deps ## Instructions per request under callgrind (valgrind, wrk), and trace export's share of the CPU samples (perf)
	scripts/callgrind_request.sh
	@if command -v perf >/dev/null && [ -x target/otelcol/bin/otelcol ]; then \
		$(E2E_DEPS)/venv/bin/python scripts/perf_trace_share.py; \
	else echo "perf or target/otelcol (make cluster-build) missing: trace export's share of the CPU samples skipped"; fi

chart-test: e2e-deps ## helm lint/template and promtool checks of charts/palisade (each skipped without its tool)
	PATH="$(CURDIR)/$(E2E_DEPS)/venv/bin:$$PATH" scripts/chart_test.sh

image: ## Build the operator and server images (docker, podman or buildah; skips without one)
	scripts/image.sh

e2e: e2e-deps cluster-build ## The cluster suite: the operator and server against a local control plane it starts
	$(CARGO) test --locked -p palisade-cluster --test cluster

cluster-build: ## Build kube-apiserver, kube-controller-manager, etcd, External Secrets Operator and an OpenTelemetry Collector from the pinned Go modules (cached in target/)
	tests/cluster/controlplane/build.sh
	tests/cluster/eso/build.sh
	tests/otelcol/build.sh
ifeq ($(CI),true)
	@# The binaries and their stamps stay; Go's module and build caches (about 9 GB) are only
	@# needed to build them again, which a CI run never does.
	rm -rf target/go
endif

cluster: cluster-build ## Start a local control plane on loopback (admin kubeconfig in target/cluster/run/); prints how to use it
	$(CARGO) run --locked -q -p palisade-cluster -- up

cluster-down: ## Stop the control plane of make cluster
	$(CARGO) run --locked -q -p palisade-cluster -- down

test-deps: ## Install the system tools the tests run (lua5.4, kubectl, python3-venv) where missing: apt-get as root
	scripts/install_test_tools.sh

e2e-deps: $(E2E_DEPS)/venv/.installed $(E2E_DEPS)/node/.installed ## Install the pinned third-party test clients

$(E2E_DEPS)/venv/.installed: tests/deps/requirements.txt
	python3 -m venv $(E2E_DEPS)/venv
	$(E2E_DEPS)/venv/bin/pip install --quiet --disable-pip-version-check -r tests/deps/requirements.txt
	touch $@

$(E2E_DEPS)/node/.installed: tests/deps/package.json tests/deps/package-lock.json
	mkdir -p $(E2E_DEPS)/node
	cp tests/deps/package.json tests/deps/package-lock.json $(E2E_DEPS)/node/
	cd $(E2E_DEPS)/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: ## Serve the company-info sample locally with a development key; prints tokens and examples
	$(CARGO) build -q -p palisade-server
	rm -rf $(DEV) && mkdir -p $(DEV)/secrets/company-info-jwt
	head -c 32 /dev/urandom | base64 > $(DEV)/secrets/company-info-jwt/hmac-key
	$(SERVER) policy compile config/samples/company-info.yaml --secrets-dir $(DEV)/secrets --documents-dir $(DEV)/documents > $(DEV)/policy.yaml
	@scripts/run_banner.sh $(SERVER) $(DEV)/policy.yaml
	$(SERVER) serve --policy-file $(DEV)/policy.yaml --documents-dir $(DEV)/documents \
		--listen 127.0.0.1:8080 --metrics-listen 127.0.0.1:9090 --audit-log $(DEV)/audit.log --log-format text
