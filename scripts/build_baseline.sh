#!/usr/bin/env bash
# Builds the release palisade-server of a past commit, the baseline `make bench` compares the
# current server with in the same run: target/baseline/<commit>/palisade-server, built once (a
# second call with the same commit does nothing). The commit's sources come from `git archive` (no
# worktree is registered) and build in a target directory of their own, so that nothing of the
# current build is overwritten or reused across the two source trees.
#   scripts/build_baseline.sh <commit>    prints the binary's path
set -euo pipefail
rev=${1:?usage: scripts/build_baseline.sh <commit>}
root=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$root" rev-parse --verify "$rev^{commit}")
dir=$root/target/baseline/$commit
binary=$dir/palisade-server
if [ ! -x "$binary" ]; then
  rm -rf "$dir/src"
  mkdir -p "$dir/src"
  git -C "$root" archive "$commit" | tar -x -C "$dir/src"
  echo "building palisade-server at $commit (release, target/baseline/target)" >&2
  CARGO_TARGET_DIR=$root/target/baseline/target cargo build --release --locked -q \
    --manifest-path "$dir/src/Cargo.toml" -p palisade-server >&2
  cp "$root/target/baseline/target/release/palisade-server" "$binary.tmp"
  mv "$binary.tmp" "$binary"
fi
echo "$binary"
