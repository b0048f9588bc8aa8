#!/usr/bin/env bash
# Re-downloads the upstream CustomResourceDefinitions in tests/schemas/upstream/ (the schemas the
# tests validate Palisade's ExternalSecrets, ServiceMonitors and PrometheusRule against) from the
# upstream repositories at the pinned release tags below, with their licence and notice, and
# rewrites SHA256SUMS.
#
#   scripts/refresh_upstream_schemas.sh           download the pinned versions (needs GitHub access)
#   scripts/refresh_upstream_schemas.sh --check   verify the vendored files against SHA256SUMS (offline)
#
# To move to newer releases: change the tags here, run the script, update the table in
# tests/schemas/upstream/README.md, and run the tests that use the schemas
# (cargo test -p palisade-operator --test schemas --test chart).
set -euo pipefail
cd "$(dirname "$0")/.."

# External Secrets Operator: the CRDs of config/crds/bases/ at this tag.
ESO_VERSION=v2.9.0
# Prometheus Operator: the CRDs of example/prometheus-operator-crd/ at this tag.
PROMETHEUS_OPERATOR_VERSION=v0.93.0

dest=tests/schemas/upstream
eso=https://raw.githubusercontent.com/external-secrets/external-secrets/$ESO_VERSION
prom=https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION

if [[ ${1:-} == --check ]]; then
  cd "$dest"
  sha256sum --check --strict SHA256SUMS
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

# Each download goes to a scratch directory first: a failed or partial download changes nothing.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fetch() {
  echo "  $1"
  curl --fail --silent --show-error --location --retry 3 --output "$scratch/$2" "$1"
}

echo "== External Secrets Operator $ESO_VERSION"
for plural in externalsecrets secretstores clustersecretstores; do
  fetch "$eso/config/crds/bases/external-secrets.io_$plural.yaml" "external-secrets.io_$plural.yaml"
done
fetch "$eso/LICENSE" LICENSE
echo "== Prometheus Operator $PROMETHEUS_OPERATOR_VERSION"
for plural in servicemonitors prometheusrules; do
  fetch "$prom/example/prometheus-operator-crd/monitoring.coreos.com_$plural.yaml" "monitoring.coreos.com_$plural.yaml"
done
fetch "$prom/NOTICE" NOTICE

# Both projects are Apache-2.0: one licence text serves both (the test checks that).
fetch "$prom/LICENSE" LICENSE.prometheus-operator
if ! grep -q 'Apache License' "$scratch/LICENSE.prometheus-operator" || ! grep -q 'Version 2.0' "$scratch/LICENSE.prometheus-operator"; then
  echo "the Prometheus Operator is no longer licensed under Apache-2.0: review before vendoring" >&2
  exit 1
fi
rm "$scratch/LICENSE.prometheus-operator"

(cd "$scratch" && sha256sum -- *.yaml > SHA256SUMS)
cp "$scratch"/* "$dest"/
echo "== written to $dest:"
cat "$dest/SHA256SUMS"
echo "Update the versions in $dest/README.md if they changed, then run the schema and chart tests."
