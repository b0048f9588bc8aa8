#!/usr/bin/env bash
# Builds the two container images from images/Dockerfile (targets `operator` and `server`) with
# docker, podman or buildah, whichever is on PATH and answers, and checks that each one runs its
# binary. Without a usable tool it says so and skips (exit 0), unless IMAGE_REQUIRED=1.
#
#   IMAGE_REGISTRY  default ghcr.io/palisade-dev (the names the manifests and the operator use)
#   IMAGE_TAG       default the workspace version in Cargo.toml
#   IMAGE_TOOL      docker, podman or buildah: use this one, not the first that works
#   IMAGE_REQUIRED  1: fail instead of skipping when no tool works (release CI)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
registry=${IMAGE_REGISTRY:-ghcr.io/palisade-dev}
tag=${IMAGE_TAG:-$version}

skip() {
    if [ "${IMAGE_REQUIRED:-0}" = 1 ]; then
        echo "image.sh: FAILED: $1" >&2
        exit 1
    fi
    echo "image.sh: SKIPPED, no image built: $1" >&2
    exit 0
}

# Whether the tool is installed and can reach its engine (docker needs a running daemon).
works() {
    command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1
}

tool=${IMAGE_TOOL:-}
if [ -n "$tool" ]; then
    case $tool in
        docker | podman | buildah) ;;
        *)
            echo "image.sh: IMAGE_TOOL must be docker, podman or buildah, not '$tool'" >&2
            exit 2
            ;;
    esac
    works "$tool" || skip "IMAGE_TOOL=$tool is not installed or cannot reach its engine ('$tool info' fails)"
else
    for candidate in docker podman buildah; do
        if works "$candidate"; then
            tool=$candidate
            break
        fi
    done
    if [ -z "$tool" ]; then
        found=""
        for candidate in docker podman buildah; do
            command -v "$candidate" >/dev/null 2>&1 && found="$found $candidate"
        done
        if [ -n "$found" ]; then
            skip "found${found} on PATH, but '<tool> info' fails (is the daemon running?)"
        fi
        skip "none of docker, podman or buildah is on PATH"
    fi
fi

for target in operator server; do
    image="$registry/palisade-$target:$tag"
    echo "image.sh: building $image with $tool"
    case $tool in
        docker) DOCKER_BUILDKIT=1 docker build -f images/Dockerfile --target "$target" -t "$image" . ;;
        podman) podman build -f images/Dockerfile --target "$target" -t "$image" . ;;
        buildah) buildah build -f images/Dockerfile --target "$target" -t "$image" . ;;
    esac
    # The binary runs in the runtime base (glibc, user 65532) and is the version just built.
    if [ "$tool" != buildah ]; then
        expected="palisade-$target $version"
        actual=$("$tool" run --rm "$image" --version)
        if [ "$actual" != "$expected" ]; then
            echo "image.sh: $image --version printed '$actual', expected '$expected'" >&2
            exit 1
        fi
        echo "image.sh: $image runs: $actual"
    fi
done
