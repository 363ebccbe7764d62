#!/usr/bin/env python3
"""Forward-pass throughput: trojanscan (candle) vs PyTorch, same workloads, one run.

    HF_HUB_OFFLINE=1 python3 scripts/bench_forward.py [--threads 2] [--iters 5] [--json OUT.json]
        [--fixtures DIR] [--skip-rust] [--skip-torch] [--attn sdpa|eager] [--only minilm|smollm2]

Workloads (synthetic ids from a fixed seed, attention mask all ones, no padding):
    MiniLM  (fixtures/minilm, f32)                       batch 32 x seq 32, [CLS] first, [SEP] last
    SmolLM2 (fixtures/smollm2/*.Q4_1.gguf)               batch 8  x seq 32
        PyTorch: transformers dequantizes the GGUF to f32 (PyTorch has no Q4_1 kernels), so the
        "native" row compares trojanscan's quantized path against PyTorch f32.

PyTorch side: torch.set_num_threads(--threads), eval, no_grad, output_hidden_states=True
(SmolLM2: use_cache=False, logits_to_keep=1 = logits at the last token only, as trojanscan does),
2 warm-up iterations, then the median of --iters (>= 5) timed full forwards.
Rust side: `cargo run --release --example forward_bench -- --model PATH --batch B --seq S
--precision f32|native --iters N --threads T` with RAYON_NUM_THREADS=T, which prints one JSON
line {"model","batch","seq","precision","ms_per_batch","tokens_per_s"}. The example is built
once up front (`cargo build --release --example forward_bench`); if building or running it
fails, the script prints "rust side failed: ..." and still reports the PyTorch figures.

Prints a table (model, precision, PyTorch tok/s, trojanscan tok/s, ratio = trojanscan / PyTorch)
with the CPU model name and thread count; --json OUT writes the same as JSON.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEED = 1234


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def workloads(fixtures):
    minilm = os.path.join(fixtures, "minilm")
    smol = os.path.join(fixtures, "smollm2", SMOLLM2_GGUF)
    return [
        # name, path, kind, batch, seq, rust precisions
        ("all-MiniLM-L6-v2", minilm, "bert", 32, 32, ["f32"]),
        ("SmolLM2-135M-Instruct", smol, "gguf", 8, 32, ["f32", "native"]),
    ]


# ---------------------------------------------------------------- PyTorch side
def torch_bench(path, kind, batch, seq, iters, threads, attn):
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    kw = dict(dtype=torch.float32, attn_implementation=attn)
    if kind == "gguf":
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                     gguf_file=os.path.basename(path), **kw)
    else:
        model = AutoModel.from_pretrained(path, **kw)
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(SEED)
    # avoid the low (special / unused) ids, like the Rust example does
    ids = torch.randint(1000, vocab, (batch, seq), generator=g, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "bert":
        tok = AutoTokenizer.from_pretrained(path)
        ids[:, 0] = tok.cls_token_id
        ids[:, -1] = tok.sep_token_id
        inputs["token_type_ids"] = torch.zeros_like(ids)
    else:
        inputs["use_cache"] = False
        # trojanscan computes LM-head logits only at the last real token; do the same here
        # (otherwise PyTorch spends ~20% of SmolLM2's FLOPs on 256 x 49152 logits).
        inputs["logits_to_keep"] = 1

    def once():
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        return out.hidden_states[-1].shape

    for _ in range(2):
        once()
    times = []
    for _ in range(max(iters, 1)):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    del model
    return {"ms_per_batch": med * 1e3, "tokens_per_s": batch * seq / med,
            "times_ms": [round(x * 1e3, 3) for x in times]}


# ---------------------------------------------------------------- Rust side
def cargo_env(threads):
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    return env


def rust_build(threads, timeout):
    cmd = ["cargo", "build", "--release", "--example", "forward_bench"]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=cargo_env(threads), capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}: {e}"
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        return f"{' '.join(cmd)} exited {p.returncode}:\n{tail}"
    return None


def rust_bench(path, batch, seq, precision, iters, threads, timeout):
    cmd = ["cargo", "run", "--quiet", "--release", "--example", "forward_bench", "--",
           "--model", path, "--batch", str(batch), "--seq", str(seq), "--precision", precision,
           "--iters", str(iters), "--threads", str(threads)]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=cargo_env(threads), capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(cmd)}: {e}")
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"exited {p.returncode}:\n{tail}")
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            res = json.loads(line)
            if "tokens_per_s" not in res:
                raise RuntimeError(f"no tokens_per_s in {line}")
            return res
    raise RuntimeError(f"no JSON line on stdout: {p.stdout[-500:]!r}")


# ---------------------------------------------------------------- main
def fmt(x):
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "-"


def main():
    ap = argparse.ArgumentParser(description="trojanscan vs PyTorch forward throughput",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median reported, >= 5)")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "fixtures"))
    ap.add_argument("--attn", default="sdpa", help="PyTorch attn_implementation (default sdpa, "
                    "transformers' default and its fastest CPU path)")
    ap.add_argument("--only", choices=["minilm", "smollm2"])
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--build-timeout", type=int, default=3600)
    ap.add_argument("--run-timeout", type=int, default=1800)
    ap.add_argument("--json", metavar="OUT", help="also write results as JSON")
    args = ap.parse_args()
    iters = max(args.iters, 5)

    import torch
    import transformers
    cpu = cpu_name()
    print(f"CPU: {cpu}  ({os.cpu_count()} logical cpus)  threads: {args.threads}")
    print(f"torch {torch.__version__} / transformers {transformers.__version__}  attn={args.attn}  "
          f"iters={iters} (median)", flush=True)

    rust_err = None
    if not args.skip_rust:
        print("building forward_bench example (cargo build --release) ...", flush=True)
        rust_err = rust_build(args.threads, args.build_timeout)
        if rust_err:
            print(f"rust side failed: {rust_err}", flush=True)

    rows = []
    for name, path, kind, batch, seq, precisions in workloads(args.fixtures):
        if args.only and args.only != ("minilm" if kind == "bert" else "smollm2"):
            continue
        pt = None
        if not args.skip_torch:
            try:
                pt = torch_bench(path, kind, batch, seq, iters, args.threads, args.attn)
                print(f"pytorch  {name} f32 b{batch}xs{seq}: {pt['ms_per_batch']:.1f} ms/batch, "
                      f"{pt['tokens_per_s']:,.0f} tok/s", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"pytorch side failed for {name}: {e}", flush=True)
        for prec in precisions:
            rs = None
            if not args.skip_rust and rust_err is None:
                try:
                    rs = rust_bench(path, batch, seq, prec, iters, args.threads, args.run_timeout)
                    print(f"rust     {name} {prec} b{batch}xs{seq}: {rs['ms_per_batch']:.1f} ms/batch, "
                          f"{rs['tokens_per_s']:,.0f} tok/s", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"rust side failed: {name} {prec}: {e}", flush=True)
            ratio = (rs["tokens_per_s"] / pt["tokens_per_s"]) if (rs and pt) else None
            rows.append({"model": name, "path": os.path.relpath(path, ROOT), "batch": batch, "seq": seq,
                         "precision": prec,
                         "pytorch_precision": "f32",
                         "pytorch_tokens_per_s": pt["tokens_per_s"] if pt else None,
                         "pytorch_ms_per_batch": pt["ms_per_batch"] if pt else None,
                         "trojanscan_tokens_per_s": rs["tokens_per_s"] if rs else None,
                         "trojanscan_ms_per_batch": rs["ms_per_batch"] if rs else None,
                         "ratio": ratio})

    print()
    print(f"CPU: {cpu}   threads: {args.threads}")
    hdr = f"{'model':<24} {'precision':<10} {'shape':<8} {'pytorch tok/s':>14} {'trojanscan tok/s':>17} {'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        prec = r["precision"] + ("*" if r["precision"] != "f32" else "")
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['model']:<24} {prec:<10} {r['batch']}x{r['seq']:<5} {fmt(r['pytorch_tokens_per_s']):>14} "
              f"{fmt(r['trojanscan_tokens_per_s']):>17} {ratio:>7}")
    if any(r["precision"] != "f32" for r in rows):
        print("* trojanscan quantized path vs PyTorch f32 (dequantized) model")
    if rust_err:
        print("(rust side failed; see above)")

    if args.json:
        out = {"cpu": cpu, "threads": args.threads, "iters": iters, "attn_implementation": args.attn,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "rust_error": rust_err, "results": rows}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
