#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 300) each, records
# the executions in fuzz/runs.tsv and summarizes them in docs/fuzzing.md. A crash fails the run
# and its input is copied to fuzz/regressions/<target>/, which `make test` replays from then on
# (tests/fuzzing/tests/replay.rs).
#
#   make fuzz                                  # every target, 300 s each
#   FUZZ_SECONDS=60 FUZZ_TARGETS="credential jwt_claims" make fuzz
#
# Needs a nightly toolchain (libFuzzer's instrumentation) and installs cargo-fuzz (pinned) under
# target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-300}
cargo_fuzz_version=0.13.2
tools=$root/target/tools
export CARGO_TARGET_DIR=$root/target/fuzz
# Instrumented builds never share a build directory with the ordinary ones.
export CARGO_BUILD_BUILD_DIR=$CARGO_TARGET_DIR

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "make fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if [[ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
    cargo install --locked --quiet --root "$tools" cargo-fuzz --version "$cargo_fuzz_version"
fi
export PATH=$tools/bin:$PATH

targets=${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^palisade-fuzz$')}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cd fuzz
cargo +nightly fuzz build --debug-assertions >&2

status=0
for target in $targets; do
    work=$CARGO_TARGET_DIR/corpus/$target
    artifacts=$CARGO_TARGET_DIR/artifacts/$target
    mkdir -p "$work" "$artifacts"
    log=$CARGO_TARGET_DIR/$target.log
    echo "fuzzing $target for ${seconds}s" >&2
    crashed=0
    # New inputs go to the first directory (under target/); the committed seeds stay as they are.
    cargo +nightly fuzz run --debug-assertions "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
        -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1 || crashed=1
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-0}
    for artifact in "$artifacts"/*; do
        [[ -f "$artifact" ]] || continue
        crashed=1
        cp "$artifact" "regressions/$target/"
        echo "$target crashed: input copied to fuzz/regressions/$target/$(basename "$artifact")" >&2
        rm "$artifact"
    done
    if [[ $crashed == 1 ]]; then
        tail -40 "$log" >&2
        status=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$commit" "$target" "$runs" "$seconds" "$crashed" >>runs.tsv
    echo "$target: $runs executions in ${seconds}s, crashed=$crashed" >&2
done
cd "$root"
python3 scripts/fuzz_report.py
exit $status
