#!/usr/bin/env bash
# CUDA checks, on a machine with an NVIDIA GPU:
#   1. the `cuda` test target (kernels and zoo models on cuda:0 against the CPU, scikit-learn
#      and transformers),
#   2. the README's scan and a dataset audit on cpu and on cuda: same verdict, same trigger,
#      same flagged rows,
#   3. scripts/bench_clustering.py with trojanscan on the GPU (scikit-learn on the CPU, as
#      ART runs it), then with trojanscan on the CPU of the same machine.
#
#   scripts/cuda_check.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR holds prebuilt binaries `trojanscan`, `cluster_bench` and `cuda` (the test target);
# without it they are built here with `--features cuda` (needs the CUDA toolkit; set
# CUDA_COMPUTE_CAP, e.g. 90 for an H100). Logs and JSON go to OUT_DIR (default cuda-check/
# in the repository). Relative paths are taken from the current directory. A prebuilt `cuda`
# test binary reads testdata/ from the checkout it was built in (its path is compiled in).
# Prints a summary last; exits non-zero if a check failed.
set -uo pipefail
BIN=${1:+$(realpath "$1")}
OUT=$(realpath -m "${2:-$(dirname "$0")/../cuda-check}")
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
: >"$OUT/times.txt"
if [ -z "$BIN" ]; then
    BIN=target/release/cuda-check-bin
    mkdir -p "$BIN"
    cargo build --release --features cuda --bin trojanscan --example cluster_bench || exit 1
    cp target/release/trojanscan target/release/examples/cluster_bench "$BIN/"
    t=$(cargo test --release --features cuda --test cuda --no-run --message-format=json |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m["target"]["name"] == "cuda": print(m["executable"])')
    [ -n "$t" ] || { echo "no cuda test binary was built"; exit 1; }
    cp "$t" "$BIN/cuda" || exit 1
fi
summary=()
fail=0
note() { summary+=("$1"); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

# 1. the cuda test target
if "$BIN/cuda" --test-threads=1 --nocapture >"$OUT/cuda-tests.log" 2>&1; then
    note "cuda tests: $(grep -E '^test result' "$OUT/cuda-tests.log")"
else
    note "cuda tests FAILED (see $OUT/cuda-tests.log)"
    fail=1
fi
grep -E "on cuda|inertia|flags" "$OUT/cuda-tests.log"

# 2. scan and audit on both devices
Z=testdata/zoo
for dev in cpu cuda; do
    s=$(date +%s%N)
    "$BIN/trojanscan" scan $Z/badnets-s0 --base $Z/clean-base-s0 --probe $Z/badnets-s0/heldout.jsonl \
        --device $dev --format json >"$OUT/scan-$dev.json" 2>"$OUT/scan-$dev.err"
    echo "scan on $dev: exit $? in $(( ($(date +%s%N) - s) / 1000000 )) ms" | tee -a "$OUT/times.txt"
    s=$(date +%s%N)
    "$BIN/trojanscan" audit $Z/badnets-s0 --data $Z/badnets-s0/train.jsonl \
        --device $dev --format json >"$OUT/audit-$dev.json" 2>"$OUT/audit-$dev.err"
    echo "audit on $dev: exit $? in $(( ($(date +%s%N) - s) / 1000000 )) ms" | tee -a "$OUT/times.txt"
done
cmp=$(python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except Exception as e:
        return {"error": str(e)}
sc, sg = load("scan-cpu.json"), load("scan-cuda.json")
ac, ag = load("audit-cpu.json"), load("audit-cuda.json")
def top(r):
    t = (r.get("hunt") or {}).get("triggers") or []
    return t[0]["text"] if t else None
ok = (sc.get("verdict") == sg.get("verdict") == "trojaned" and top(sc) == top(sg) == "cf"
      and abs(sc["suspicion"] - sg["suspicion"]) < 0.02
      and ac.get("flagged") == ag.get("flagged") and ac.get("flagged"))
print(f"scan: cpu {sc.get('verdict')} {top(sc)} {sc.get('suspicion', float('nan')):.3f}, "
      f"cuda {sg.get('verdict')} {top(sg)} {sg.get('suspicion', float('nan')):.3f}; "
      f"audit flags cpu {len(ac.get('flagged', []))} cuda {len(ag.get('flagged', []))} rows, "
      f"{'identical' if ac.get('flagged') == ag.get('flagged') else 'DIFFERENT'}")
print("same" if ok else "DIFFERENT")
EOF
)
echo "$cmp"
note "$(echo "$cmp" | head -1)"
[ "$(echo "$cmp" | tail -1)" = same ] || { note "scan/audit cpu vs cuda DIFFER"; fail=1; }

# 3. clustering benchmark
for dev in cuda cpu; do
    python3 scripts/bench_clustering.py --latent laplace --bin "$BIN/cluster_bench" --device $dev \
        --json "$OUT/bench-$dev.json" >"$OUT/bench-$dev.log" 2>&1 || { note "bench on $dev failed"; fail=1; }
    note "bench, trojanscan on $dev: $(grep -E '^speedup' "$OUT/bench-$dev.log" | tr '\n' ' ')"
done

echo
echo "== summary =="
printf '%s\n' "${summary[@]}"
cat "$OUT/times.txt"
exit $fail
