#!/bin/bash
# whale against llama.cpp on the same GGUF files, alternating, two rounds:
# the README's speed tables. Run it on a quiet machine (with two cores, any
# other process starves a two-thread run).
#
#   WHALE=target/release/whale LLAMA_BENCH=/path/to/llama-bench \
#   LEVELS="avx512 amx" THREADS=2 scripts/bench-vs-llama.sh FILE:TG [FILE:TG ...]
#
# FILE is a GGUF (for a split model, its first part); TG the decode length
# (64, or 32 for the V3 files). Each round fills the page cache with the
# file's parts first: llama.cpp copies repacked weights into anonymous
# memory, which can push a mapped file out of the cache before whale's run.
# whale runs once per level in LEVELS (WHALE_SIMD; empty for its default).
set -euo pipefail
WHALE=${WHALE:-target/release/whale}
LLAMA_BENCH=${LLAMA_BENCH:?set LLAMA_BENCH to the path of llama-bench}
LEVELS=${LEVELS:-""}
THREADS=${THREADS:-2}
warm() { cat "${1%-00001-of-*}"* > /dev/null 2>&1 || cat "$1" > /dev/null; }
for spec in "$@"; do
  f=${spec%:*}; tg=${spec##*:}
  for r in 1 2; do
    for lv in ${LEVELS:-default}; do
      [ "$lv" = default ] && lv=""
      warm "$f"
      echo "== $f round $r whale ${lv:-default}"
      WHALE_SIMD=$lv "$WHALE" bench "$f" -t "$THREADS" -p 512 -n 0 -r 1 2>&1 | grep -E "pp512|peak"
      WHALE_SIMD=$lv "$WHALE" bench "$f" -t "$THREADS" -p 0 -n "$tg" -r 1 2>&1 | grep -E "tg$tg|bound"
    done
    warm "$f"
    echo "== $f round $r llama.cpp"
    /usr/bin/time -f "llama.cpp peak RSS %M KB" "$LLAMA_BENCH" -m "$f" -t "$THREADS" -p 512 -n "$tg" -r 1 2>&1 |
      grep -E "pp512|tg$tg|RSS"
  done
done
