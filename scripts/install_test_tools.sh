#!/usr/bin/env bash
# `make test-deps` (a prerequisite of `make test`): the system tools the tests run, installed with
# the system package manager when they are missing.
#   lua5.4   runs the Argo CD health checks (operator/tests/argocd_health.rs)
#   kubectl  renders the kustomize install (operator/tests/kustomize.rs, operator/tests/chart.rs)
#   python3-venv  lets `make e2e-deps` create the test virtualenv (Debian splits it from python3)
# As root (CI, containers) it installs them with apt-get; otherwise it stops with the one command
# to run. It changes nothing when all are present.
set -euo pipefail

missing=()
command -v lua5.4 >/dev/null 2>&1 || missing+=(lua5.4)
command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

# Debian ships kubectl only from the Kubernetes project's own apt repository (the distribution's
# kubernetes-client is 1.20, too old for the kustomize the install uses).
kubernetes_repo="kubectl comes from the Kubernetes apt repository; add it first:
  curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.34/deb/Release.key | gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
  echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /' > /etc/apt/sources.list.d/kubernetes.list"

# Whether an apt source offers the package.
available() {
  [[ -n $(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)') ]]
}

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need ${missing[*]}, and there is no apt-get here: install ${missing[*]} with this system's package manager, then run make test again" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "error: the tests need ${missing[*]}; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  if [[ " ${missing[*]} " == *" kubectl "* ]] && ! available kubectl; then
    echo "$kubernetes_repo" >&2
  fi
  exit 1
fi

echo "== installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
for name in "${missing[@]}"; do
  if ! available "$name"; then
    if [[ $name == kubectl ]]; then
      echo "error: no apt source provides kubectl. $kubernetes_repo
then run make test again" >&2
    else
      echo "error: no apt source provides $name" >&2
    fi
    exit 1
  fi
done
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for tool in lua5.4 kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is still missing after apt-get install" >&2; exit 1; }
done
python3 -c 'import ensurepip, venv' || { echo "error: python3 still cannot create a virtualenv" >&2; exit 1; }
echo "== installed ${missing[*]}: $(lua5.4 -v 2>&1 | head -1); kubectl $(kubectl version --client -o yaml 2>/dev/null | sed -n 's/^ *gitVersion: //p' | head -1)"
