#!/usr/bin/env bash
# Copies the single sources that the Helm chart carries into charts/palisade/files/: the generated
# CRDs (crds/palisade.dev_*.yaml, written by `make crds`) and the operator's RBAC rules
# (config/rbac/, checked against the operator's table of API calls by operator/tests/rbac.rs).
# The chart's templates read these copies; operator/tests/chart.rs fails when one differs.
set -euo pipefail
cd "$(dirname "$0")/.."

files=charts/palisade/files
rm -f "$files"/crds/*.yaml
cp crds/palisade.dev_*.yaml "$files/crds/"
cp config/rbac/cluster_role.yaml config/rbac/leader_election_role.yaml config/rbac/aggregated_roles.yaml "$files/rbac/"
echo "synced $files/crds/ and $files/rbac/"
