#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, cargo-fuzz and libFuzzer) for a bounded time each,
# starting from the seed corpus in fuzz/corpus/<target>/; fails when any target crashes (a
# panic, an overflow, a sanitizer report, a timeout or running out of memory).
#
#   scripts/fuzz.sh [SECONDS]          # default 30 s per target
#   TARGETS="text_parser snapshot" scripts/fuzz.sh 60
#   FUZZ_DEV=1 scripts/fuzz.sh 20      # unoptimised build: builds faster, runs slower
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler, or the stable one with
# RUSTC_BOOTSTRAP=1 (used when no nightly toolchain is installed). New inputs the fuzzer finds go
# to a scratch corpus ($FUZZ_WORK, default target/fuzz-work), not into the repository; a crash
# leaves its input in $FUZZ_WORK/artifacts/<target>/ with the command that replays it.
# After a change of a wire format, rewrite the seeds: cargo run --example fuzz_seeds -- fuzz/corpus
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
work=${FUZZ_WORK:-$root_dir/target/fuzz-work}
cd "$root_dir/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
build_flags=()
if [ -n "${FUZZ_DEV:-}" ]; then
  build_flags+=(--dev)
fi
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  # Instrumented builds apart from the ordinary ones of the same target directory.
  build_flags+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi

targets=${TARGETS:-$(cargo "${toolchain[@]}" fuzz list)}
cargo "${toolchain[@]}" fuzz build "${build_flags[@]}"

failed=()
for t in $targets; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  echo "== $t: ${seconds}s"
  # -timeout: one input taking this long is a hang; -rss_limit_mb: a decoder that lets an input
  # allocate without bound fails here instead of taking the machine.
  if ! cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$t" \
    "$work/corpus/$t" "$root_dir/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 \
    >"$work/$t.log" 2>&1; then
    failed+=("$t")
    echo "   CRASHED; log: $work/$t.log"
    grep -E '^(thread|panicked|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' \
      "$work/$t.log" | head -20 || true
  else
    grep -E '^stat::number_of_executed_units' "$work/$t.log" || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]}" >&2
  exit 1
fi
echo "no crash in: $targets"
