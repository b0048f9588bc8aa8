#!/usr/bin/env bash
# Shows that a fresh clone passes `make test` with nothing but itself: clones the committed state
# (HEAD, or the ref given) into an empty temporary directory, with nothing beside it, and runs
# `make test` there with a cold target directory of its own; prints how long it took.
#
#   scripts/fresh_clone_test.sh [REF]         default HEAD
#   MAKE_TARGET=lint scripts/fresh_clone_test.sh   another target (quicker checks of the clone)
#   KEEP=1 scripts/fresh_clone_test.sh        keep the clone (its path is printed)
#
# Only committed work is tested: uncommitted changes of the working tree are not in the clone.
# Cargo's download cache (CARGO_HOME) is shared with this machine; everything else (target/, the
# test clients of `make e2e-deps`, the system tools of `make test-deps`) starts from nothing or
# from what the machine has.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
ref=${1:-HEAD}
target=${MAKE_TARGET:-test}
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")

work=$(mktemp -d "${TMPDIR:-/tmp}/palisade-fresh-clone.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  echo "== keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
git clone --quiet --no-local --no-checkout "$repo" "$work/palisade"
git -C "$work/palisade" checkout --quiet --detach "$commit"
cd "$work/palisade"
# Nothing beside the clone: the directory holds the clone only.
if [ "$(ls -A "$work")" != palisade ]; then
  echo "error: $work holds more than the clone" >&2
  exit 1
fi

echo "== make $target in a fresh clone of $(git log -1 --format='%h %s' | cut -c1-100)"
unset CARGO_TARGET_DIR
start=$(date +%s)
status=0
make "$target" || status=$?
elapsed=$(( $(date +%s) - start ))
printf '== make %s in a fresh clone of %s: %s after %dm%02ds (cold target/)\n' \
  "$target" "${commit:0:12}" "$([ "$status" = 0 ] && echo passed || echo FAILED)" \
  $((elapsed / 60)) $((elapsed % 60))
exit "$status"
