#!/usr/bin/env python3
"""Check `trojanscan activations` output against PyTorch/transformers.

    trojanscan activations MODEL --input TEXTS.txt --out OUT.safetensors --pool POOL
    HF_HUB_OFFLINE=1 python3 scripts/check_activations.py MODEL TEXTS.txt OUT.safetensors \
        [--pool cls|mean|last] [--tol 1e-4] [--metric row|elem|abs] [--dump-reference REF.safetensors]

MODEL is a HF model directory (config.json + model.safetensors, e.g. fixtures/minilm)
or a .gguf file (e.g. fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, loaded with
transformers' GGUF loader, dequantized to float32), or a directory holding exactly one .gguf.

TEXTS.txt holds one text per line (trailing "\\n"/"\\r\\n" stripped; empty lines are
skipped unless --keep-empty). Each text is tokenized with `tokenizer(text)` (default
special tokens) and run ALONE (batch 1, no padding) in float32 eval mode with
output_hidden_states=True, attn_implementation=eager (override with --attn).

Recomputed tensors (same names as the Rust CLI writes):
    hidden.0 ... hidden.L   [n_texts, hidden]  pooled over real tokens:
                            cls = position 0, mean = mean over tokens, last = last token.
                            hidden.0 = embedding output, hidden.l = output of block l,
                            BEFORE any final norm. (For llama, transformers' last
                            hidden_states entry has the final RMSNorm applied, so hidden.L
                            is taken from a forward hook on the last decoder layer.)
    logits                  [n_texts, vocab]   llama only: logits at the last real token.

For every tensor it prints
    max_abs   max |a - b|
    row_rel   max over rows of  max_j |a - b| / max_j |b|   (error relative to the row's scale)
    elem_rel  max over elements |a - b| / max(|b|, 1e-3 * row absmax of b)
and PASS/FAIL against --tol using --metric (default: row_rel). Exits 1 on any FAIL
(including missing/extra hidden tensors or shape mismatch), 0 otherwise.

--dump-reference PATH writes the PyTorch tensors to a safetensors file (useful for
tests and for checking this script against itself).
"""
import argparse
import glob
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch


def resolve_model(path):
    """-> (kind, model_dir, gguf_file or None)"""
    if os.path.isfile(path) and path.endswith(".gguf"):
        return "gguf", os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return "hf", path, None
        ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
        if len(ggufs) == 1:
            return "gguf", path, os.path.basename(ggufs[0])
        raise SystemExit(f"{path}: no config.json and {len(ggufs)} .gguf files (need exactly one)")
    raise SystemExit(f"{path}: not a model directory or .gguf file")


def load(path, attn):
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer)
    kind, d, gguf_file = resolve_model(path)
    kw = dict(dtype=torch.float32, attn_implementation=attn)
    if kind == "gguf":
        tok = AutoTokenizer.from_pretrained(d, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=gguf_file, **kw)
        causal = True
    else:
        cfg = AutoConfig.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        archs = cfg.architectures or []
        causal = any(a.endswith("ForCausalLM") for a in archs)
        model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(d, **kw)
    return tok, model.eval(), causal


def decoder_layers(model):
    base = getattr(model, "model", None)
    if base is not None and hasattr(base, "layers"):
        return base.layers
    raise SystemExit("cannot find decoder layers (model.model.layers)")


def pool(h, how):
    """h: [seq, hidden] -> [hidden] (float32)."""
    if how == "cls":
        return h[0]
    if how == "last":
        return h[-1]
    return h.mean(dim=0)


def compute_reference(tok, model, causal, texts, how, max_len):
    n_layers = model.config.num_hidden_layers
    hidden = [[] for _ in range(n_layers + 1)]
    logits = []
    captured = {}
    handle = None
    if causal:
        def hook(_m, _i, out):
            captured["last"] = out[0] if isinstance(out, tuple) else out
        handle = decoder_layers(model)[-1].register_forward_hook(hook)
    try:
        for text in texts:
            enc = tok(text, return_tensors="pt",
                      **({"truncation": True, "max_length": max_len} if max_len else {}))
            with torch.no_grad():
                out = model(**enc, output_hidden_states=True)
            hs = list(out.hidden_states)
            if len(hs) != n_layers + 1:
                raise SystemExit(f"expected {n_layers + 1} hidden states, got {len(hs)}")
            if causal:
                hs[-1] = captured.pop("last")  # un-normed output of the last block
            for l, h in enumerate(hs):
                hidden[l].append(pool(h[0].float(), how).numpy().copy())
            if causal:
                logits.append(out.logits[0, -1].float().numpy().copy())
    finally:
        if handle is not None:
            handle.remove()
    ref = {f"hidden.{l}": np.stack(v).astype(np.float32) for l, v in enumerate(hidden)}
    if causal:
        ref["logits"] = np.stack(logits).astype(np.float32)
    return ref


def compare(a, b):
    """a = trojanscan, b = reference; both [rows, dim] float64."""
    diff = np.abs(a - b)
    babs = np.abs(b)
    row_scale = babs.max(axis=1, keepdims=True)
    max_abs = float(diff.max()) if diff.size else 0.0
    row_rel = float((diff.max(axis=1, keepdims=True) / np.maximum(row_scale, 1e-30)).max()) if diff.size else 0.0
    floor = np.maximum(babs, np.maximum(1e-3 * row_scale, 1e-30))
    elem_rel = float((diff / floor).max()) if diff.size else 0.0
    # cosine per row (informational)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = float(np.min(num / np.maximum(den, 1e-30))) if diff.size else 1.0
    return {"max_abs": max_abs, "row_rel": row_rel, "elem_rel": elem_rel, "min_cos": cos}


def layer_key(name):
    if name.startswith("hidden."):
        try:
            return (0, int(name.split(".", 1)[1]))
        except ValueError:
            pass
    return (1, name)


def main():
    ap = argparse.ArgumentParser(description="Compare trojanscan activations with PyTorch.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("out", help="safetensors written by `trojanscan activations`")
    ap.add_argument("--pool", choices=["cls", "mean", "last"], default="mean")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--metric", choices=["row", "elem", "abs"], default="row",
                    help="which error decides PASS/FAIL (default row: row-relative)")
    ap.add_argument("--logits-tol", type=float, default=None, help="separate tolerance for logits")
    ap.add_argument("--attn", default="eager", help="transformers attn_implementation (eager|sdpa)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=None, help="truncate each text to this many tokens")
    ap.add_argument("--keep-empty", action="store_true", help="do not skip empty lines")
    ap.add_argument("--dump-reference", metavar="PATH", help="write the PyTorch tensors here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\n").rstrip("\r") for line in f]
    if not args.keep_empty:
        texts = [t for t in texts if t != ""]
    if not texts:
        raise SystemExit(f"{args.input}: no texts")

    tok, model, causal = load(args.model, args.attn)
    ref = compute_reference(tok, model, causal, texts, args.pool, args.max_len)
    if args.dump_reference:
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v) for k, v in ref.items()}, args.dump_reference,
                  metadata={"pool": args.pool, "n_texts": str(len(texts)), "source": "scripts/check_activations.py"})
        print(f"wrote reference tensors to {args.dump_reference}")

    from safetensors.numpy import load_file
    got = load_file(args.out)

    print(f"model {args.model}  texts {len(texts)}  pool {args.pool}  attn {args.attn}  "
          f"metric {args.metric}  tol {args.tol:g}")
    hdr = f"{'tensor':<12} {'shape':<14} {'max_abs':>11} {'row_rel':>11} {'elem_rel':>11} {'min_cos':>10}  result"
    print(hdr)
    print("-" * len(hdr))
    failed = False
    names = sorted(set(ref) | {k for k in got if k.startswith("hidden.") or k == "logits"}, key=layer_key)
    for name in names:
        if name not in got:
            print(f"{name:<12} missing from {args.out}  FAIL")
            failed = True
            continue
        if name not in ref:
            print(f"{name:<12} unexpected in {args.out} (reference has none)  FAIL")
            failed = True
            continue
        a = np.asarray(got[name], dtype=np.float64)
        b = ref[name].astype(np.float64)
        if a.shape != b.shape:
            print(f"{name:<12} shape {list(a.shape)} != reference {list(b.shape)}  FAIL")
            failed = True
            continue
        if not np.all(np.isfinite(a)):
            print(f"{name:<12} non-finite values  FAIL")
            failed = True
            continue
        m = compare(a, b)
        tol = args.logits_tol if (name == "logits" and args.logits_tol is not None) else args.tol
        err = {"row": m["row_rel"], "elem": m["elem_rel"], "abs": m["max_abs"]}[args.metric]
        ok = err <= tol
        failed |= not ok
        extra = ""
        if name == "logits":
            top_a, top_b = a.argmax(axis=1), b.argmax(axis=1)
            extra = f"  top1 agree {int((top_a == top_b).sum())}/{len(top_b)}"
        print(f"{name:<12} {str(list(a.shape)):<14} {m['max_abs']:11.3e} {m['row_rel']:11.3e} "
              f"{m['elem_rel']:11.3e} {m['min_cos']:10.7f}  {'PASS' if ok else 'FAIL'}{extra}")
    ignored = sorted(k for k in got if k not in names)
    if ignored:
        print(f"(ignored tensors in {args.out}: {', '.join(ignored)})")
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
