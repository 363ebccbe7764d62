#!/usr/bin/env bash
# Hashing throughput: `sha256sum` against `trojanscan hash` on the same files, in one run.
#
#   scripts/bench_hashing.sh [DIR]
#
# Without DIR it builds two sets in a temporary directory: one large file (the shape of a
# single-file checkpoint) and many 1 MiB files (a sharded or multi-file model), and adds
# the real-model fixtures when they have been fetched. Every set is read once first so all
# tools hash from the page cache; each timing is the best of $REPEATS runs. trojanscan is
# timed on one thread (`--threads 1`, the fair comparison with sha256sum) and on all cores.
# Prints MB/s and the speed-up over sha256sum (> 1 means trojanscan is faster).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
REPEATS="${REPEATS:-3}"
BIG_MB="${BIG_MB:-1024}"
SMALL_FILES="${SMALL_FILES:-512}"

cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin trojanscan
bin="$root/target/release/trojanscan"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

best_of() { # best wall-clock seconds of $REPEATS runs of "$@" (output discarded)
  local best="" t0 t1 s
  for _ in $(seq "$REPEATS"); do
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$s < $best" | bc -l)" = 1 ]; then best=$s; fi
  done
  echo "$best"
}

bench_set() { # name dir
  local name="$1" dir="$2"
  # The files `trojanscan hash` covers: git metadata is left out, as model-signing does.
  mapfile -t files < <(find "$dir" -type f -not -path '*/.git/*' -not -path '*/.github/*' \
    -not -name .gitattributes -not -name .gitignore | sort)
  local bytes
  bytes=$(cat "${files[@]}" | wc -c)
  local mb
  mb=$(echo "$bytes / 1000000" | bc -l)
  local t_sum t_one t_all
  t_sum=$(best_of sha256sum "${files[@]}")
  t_one=$(best_of "$bin" hash "$dir" --threads 1)
  t_all=$(best_of "$bin" hash "$dir")
  printf '%-28s %6d files %9.1f MB | sha256sum %7.0f MB/s | trojanscan 1 thread %7.0f MB/s (x%.2f) | all cores %7.0f MB/s (x%.2f)\n' \
    "$name" "${#files[@]}" "$mb" \
    "$(echo "$mb / $t_sum" | bc -l)" \
    "$(echo "$mb / $t_one" | bc -l)" "$(echo "$t_sum / $t_one" | bc -l)" \
    "$(echo "$mb / $t_all" | bc -l)" "$(echo "$t_sum / $t_all" | bc -l)"
  # Same digests as sha256sum, or the numbers mean nothing.
  diff <(sha256sum "${files[@]}" | awk '{print $1}' | sort) <("$bin" hash "$dir" | awk '{print $1}' | sort) >/dev/null \
    || { echo "digest mismatch in $name" >&2; exit 1; }
}

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; $(sha256sum --version | head -1)"
if [ $# -ge 1 ]; then
  cat "$1"/* >/dev/null 2>&1 || true
  bench_set "$(basename "$1")" "$1"
  exit 0
fi

mkdir -p "$tmp/big" "$tmp/many"
head -c "$((BIG_MB << 20))" /dev/urandom > "$tmp/big/model.safetensors"
for i in $(seq -w 1 "$SMALL_FILES"); do head -c $((1 << 20)) /dev/urandom > "$tmp/many/shard-$i.bin"; done
cat "$tmp"/big/* "$tmp"/many/* > /dev/null
bench_set "one ${BIG_MB} MiB file" "$tmp/big"
bench_set "${SMALL_FILES} x 1 MiB files" "$tmp/many"
for fx in "$root/fixtures/minilm" "$root/fixtures/smollm2"; do
  if [ -d "$fx" ]; then
    cat "$fx"/* >/dev/null 2>&1 || true
    bench_set "fixture $(basename "$fx")" "$fx"
  fi
done
