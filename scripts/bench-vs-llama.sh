#!/bin/bash
# whale against llama.cpp on the same GGUF files, alternating, two rounds:
# the README's speed table and docs/speed-log.md's. Run it on a quiet
# machine (with two cores, any other process starves a two-thread run).
#
#   WHALE=target/release/whale LLAMA_BENCH=/path/to/llama-bench \
#   LEVELS="avx512 amx" LLAMA_LOAD="auto none" THREADS=2 \
#   scripts/bench-vs-llama.sh FILE:TG [FILE:TG ...]
#
# WHALE may name several builds (space-separated, to compare a change with
# its base in the same rounds). DEPTH=4096 runs every test after that many
# tokens of context (`-d`, both engines); PP=0 leaves prefill out.
#
# FILE is a GGUF (for a split model, its first part); TG the decode length
# (64, or 32 for the V3 files). whale runs once per level in LEVELS
# (WHALE_SIMD; empty for its default), loading as it does by default (the
# weights read into memory when they take at most half of it); llama.cpp
# once per load mode in LLAMA_LOAD (`-lm`: auto is its default, mapped with
# Q4_K and other types copied out for its repacked layout; none reads
# everything into memory, its --no-mmap). Each run starts with the file's
# parts in the page cache.
set -euo pipefail
WHALE=${WHALE:-target/release/whale}
LLAMA_BENCH=${LLAMA_BENCH:?set LLAMA_BENCH to the path of llama-bench}
LEVELS=${LEVELS:-""}
LLAMA_LOAD=${LLAMA_LOAD:-"auto none"}
THREADS=${THREADS:-2}
PP=${PP:-512}
DEPTH=${DEPTH:-0}
depth=(); [ "$DEPTH" != 0 ] && depth=(-d "$DEPTH")
warm() { cat "${1%-00001-of-*}"* > /dev/null 2>&1 || cat "$1" > /dev/null; }
for spec in "$@"; do
  f=${spec%:*}; tg=${spec##*:}
  for r in 1 2; do
    for w in $WHALE; do
      for lv in ${LEVELS:-default}; do
        [ "$lv" = default ] && lv=""
        warm "$f"
        echo "== $f round $r whale $w ${lv:-default}"
        WHALE_SIMD=$lv "$w" bench "$f" -t "$THREADS" -p "$PP" -n "$tg" "${depth[@]}" -r 1 2>&1 | grep -E "pp$PP|tg$tg|bound"
      done
    done
    for lm in $LLAMA_LOAD; do
      warm "$f"
      echo "== $f round $r llama.cpp -lm $lm"
      /usr/bin/time -f "llama.cpp peak RSS %M KB" "$LLAMA_BENCH" -m "$f" -t "$THREADS" -p "$PP" -n "$tg" "${depth[@]}" \
        -r 1 -lm "$lm" 2>&1 | grep -E "pp$PP|tg$tg|RSS"
    done
  done
done
