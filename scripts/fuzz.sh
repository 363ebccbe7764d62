#!/usr/bin/env bash
# Builds the cargo-fuzz targets once, then runs each for a bounded time from its committed
# seeds (fuzz/corpus/<target>/seed-*). Prints each target's executions; exits non-zero if
# any target crashed, hung, ran out of memory or did not run.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 100 s, all four targets)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); works on the stable toolchain.
# FUZZ_SANITIZER=address runs under the address sanitizer (about 5x fewer executions).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-100}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_header safetensors_header tokenizer_json pickle_scan)

# libFuzzer's instrumentation and the address sanitizer are -Z flags; this lets the stable
# compiler accept them, so CI needs no nightly toolchain.
export RUSTC_BOOTSTRAP=1
# No sanitizer by default: the fuzzed readers are safe Rust, so a bounded run buys more
# executions (panics, hangs and memory blow-ups are caught either way).
san="${FUZZ_SANITIZER:-none}"

t0=$(date +%s)
cargo fuzz build --sanitizer "$san"
echo "fuzz build: $(( $(date +%s) - t0 )) s"

# New inputs go to a scratch corpus, so every run starts from the seeds alone and the
# tracked corpus folders stay as committed.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
marker="$work/started"
touch "$marker"

declare -a summary
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/corpus/$t"
  extra=()
  # Tokenizer files are larger than the other inputs; let the fuzzer grow them.
  [ "$t" = tokenizer_json ] && extra=(-max_len=65536)
  log="$work/$t.log"
  rc=0
  # -timeout: a single input running 10 s is a hang and fails the run (libFuzzer's default
  # is 20 min); the default -rss_limit_mb=2048 fails it on an unbounded allocation.
  cargo fuzz run --sanitizer "$san" "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 "${extra[@]}" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(find "fuzz/artifacts/$t" -type f -newer "$marker" \
    \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) \
    2>/dev/null | sort || true)
  if [ "$rc" -ne 0 ] || [ -n "$found" ] || [ -z "$execs" ]; then
    failed=1
    result="FAILED (exit $rc)"
    echo "---- $t: last lines of the libFuzzer log"
    tail -n 60 "$log"
    [ -z "$found" ] || printf 'artifact: %s\n' $found
  else
    result="ok, 0 crashes"
  fi
  line="$t: ${execs:-?} executions in ${secs} s (${rate:-?} exec/s), $result"
  echo "$line"
  summary+=("$line")
done

echo
echo "fuzz summary (${secs} s per target, total $(( $(date +%s) - t0 )) s):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
