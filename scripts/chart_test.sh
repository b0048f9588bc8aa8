#!/usr/bin/env bash
# `make chart-test`: the checks of the Helm chart that need tools the test virtualenv does not
# ship. Each runs where its tool is on PATH and says SKIPPED otherwise (exit 0 then):
# - helm: `helm lint --strict` and `helm template | kubernetes-validate --strict` with the default
#   values and with ci/everything-values.yaml, for Kubernetes 1.29, 1.34 and 1.37; the
#   ServiceMonitors and the PrometheusRule against the Prometheus Operator's CRD schemas.
# - promtool: `promtool check rules` and the alerts' unit tests (charts/palisade/tests/).
# Without helm, `cargo test -p palisade-operator --test chart` still renders the chart with
# Helm's engine (helm-python-sdk) and validates the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/palisade
venv=target/e2e-deps/venv/bin
schemas=tests/schemas/upstream
versions=(1.29.0 1.34.0 1.37.0)

if command -v helm >/dev/null 2>&1; then
  [[ -x $venv/kubernetes-validate ]] || { echo "$venv/kubernetes-validate is missing: run make e2e-deps" >&2; exit 1; }
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  echo "== $(helm version --short)"
  for values in "" "$chart/ci/everything-values.yaml"; do
    name=${values:+everything}
    name=${name:-default}
    args=(${values:+--values "$values"})
    echo "== helm lint --strict ($name values)"
    helm lint --strict "$chart" "${args[@]}"
    echo "== helm template | kubernetes-validate --strict ($name values)"
    helm template palisade "$chart" --namespace palisade-system "${args[@]}" > "$scratch/$name.yaml"
    # Built-in kinds to kubernetes-validate; monitoring.coreos.com kinds to their CRD schemas.
    "$venv/python" - "$scratch/$name.yaml" "$scratch/$name" <<'PY'
import sys, yaml
objects = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
groups = {"builtin": [], "servicemonitors": [], "prometheusrules": []}
for o in objects:
    if o["apiVersion"].startswith("monitoring.coreos.com/"):
        groups[o["kind"].lower() + "s"].append(o)
    else:
        groups["builtin"].append(o)
for group, members in groups.items():
    with open(f"{sys.argv[2]}-{group}.yaml", "w") as f:
        yaml.safe_dump_all(members, f)
PY
    for version in "${versions[@]}"; do
      "$venv/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$scratch/$name-builtin.yaml"
    done
    for plural in servicemonitors prometheusrules; do
      if [[ -s $scratch/$name-$plural.yaml ]]; then
        "$venv/python" operator/tests/support/validate_custom_resources.py \
          "$schemas/monitoring.coreos.com_$plural.yaml" "$scratch/$name-$plural.yaml"
      fi
    done
  done
else
  echo "helm lint, helm template | kubernetes-validate: SKIPPED (helm is not on PATH)"
fi

if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules; promtool test rules"
  promtool check rules "$chart/files/prometheus-rules.yaml"
  promtool test rules "$chart/tests/prometheus-rules.test.yaml"
else
  echo "promtool check rules, promtool test rules: SKIPPED (promtool is not on PATH; Debian: apt-get install prometheus)"
fi
