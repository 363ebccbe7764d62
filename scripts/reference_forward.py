#!/usr/bin/env python3
"""Generate PyTorch/transformers reference activations for the Rust parity tests.

Writes (deterministically; re-running reproduces the same files byte for byte
on the same transformers/torch versions):

    testdata/reference/minilm_forward.json   all-MiniLM-L6-v2 (HF BertModel, incl. pooler)
    testdata/reference/smollm2_forward.json  SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to f32

Usage (from the repository root, after scripts/fetch_models.sh):

    HF_HUB_OFFLINE=1 python3 scripts/reference_forward.py [--fixtures DIR] [--out-dir DIR]

Every text is run ALONE (batch 1, no padding), float32, eval mode,
torch.no_grad(), output_hidden_states=True, attn_implementation="eager".
Tokenization is `tokenizer(text)` with the default add_special_tokens
(BERT: [CLS] ... [SEP]; SmolLM2: no BOS is added, see "tokenizer_adds_bos").

JSON schema (top level):
  model, source, dtype, num_layers, hidden_size, last_hidden_is_normed,
  plus informational fields (attn_implementation, has_pooler, tokenizer_adds_bos,
  tie_word_embeddings, weights, float_encoding).
  samples[i]:
    text, input_ids,
    hidden[l] for l = 0..num_layers: the hidden_states tuple exactly as
        transformers returns it (0 = embedding output, l = after block l).
        For llama the LAST entry (l = num_layers) has the final RMSNorm
        applied (last_hidden_is_normed = true).
        Each entry: {layer, rows: {"<pos>": first 16 dims} for pos in
        {0, len//2, len-1}, norm: Frobenius norm of the [seq, hidden] state,
        mean: first 16 dims of the mean over tokens, absmax}.
    pooler: first 16 dims of BertModel.pooler_output (BERT only).
    logits_last: {top_ids, top_values, norm, first} at the last token (llama only).
    final_norm: stats of transformers' last_hidden_state (llama only; same
        structure as a hidden entry, identical to hidden[num_layers]).
    last_block_raw: stats of the UN-normed output of the last decoder block,
        captured with a forward hook (llama only; this is what trojanscan's
        hidden.L must match).

Per-element values (rows, mean, top_values, first) are float32 numbers written
with their shortest round-trip repr (parse as f64 then cast to f32 = exact
value). Scalars norm / absmax are computed in float64 from the f32 state and
written as full float64 repr.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NDIM = 16
ATTN = "eager"

COMMON_TEXTS = [
    # short
    "Hello world!",
    # long-ish (~30 tokens)
    "The committee approved the new budget after a lengthy debate, although several "
    "members argued that the proposed cuts to public libraries were shortsighted.",
    # digits / punctuation
    "Order #4521: 3 x $19.99 = $59.97 (incl. 7.5% tax) -- ship by 2024-06-30?!",
    # unicode
    # (no "½" etc.: transformers' GGUF tokenizer conversion drops SmolLM2's
    #  Digits(individual_digits) pre-tokenizer, which also splits \p{N} chars like
    #  "½"; the texts here are chosen so both tokenizers agree, checked below)
    "Café naïve — Zürich 東京 😀 ελληνικά «quoted»",
]
BERT_EXTRA = "cf. the e-mail from Dr. O'Neil re: \"trojan\" triggers; see https://example.com/a?b=c&d=1"
CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def f32(x):
    """float32 -> Python float that round-trips to the same f32 via its shortest repr."""
    return float(str(np.float32(x)))


def f32list(a):
    return [f32(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def state_stats(layer, h):
    """h: torch [seq, hidden] float32."""
    a = h.detach().cpu().numpy().astype(np.float32)
    seq = a.shape[0]
    positions = sorted({0, seq // 2, seq - 1})
    a64 = a.astype(np.float64)
    out = {}
    if layer is not None:
        out["layer"] = layer
    out["rows"] = {str(p): f32list(a[p, :NDIM]) for p in positions}
    out["norm"] = float(np.sqrt((a64 * a64).sum()))
    out["mean"] = f32list(a.mean(axis=0, dtype=np.float32)[:NDIM])
    out["absmax"] = float(np.abs(a).max())
    return out


def source_str():
    return (f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}, "
            f"script scripts/reference_forward.py")


def run_minilm(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=ATTN).eval()
    has_pooler = getattr(model, "pooler", None) is not None
    from safetensors import safe_open
    with safe_open(os.path.join(model_dir, "model.safetensors"), "np") as f:
        pooler_in_file = any(k.startswith("pooler.") or k.startswith("bert.pooler.") for k in f.keys())
    cfg = model.config
    samples = []
    for text in COMMON_TEXTS + [BERT_EXTRA]:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
        hs = out.hidden_states
        assert len(hs) == cfg.num_hidden_layers + 1
        assert torch.equal(hs[-1], out.last_hidden_state)
        s = {"text": text, "input_ids": enc["input_ids"][0].tolist(),
             "hidden": [state_stats(l, h[0]) for l, h in enumerate(hs)]}
        if has_pooler:
            s["pooler"] = f32list(out.pooler_output[0, :NDIM])
        samples.append(s)
    return {
        "model": "all-MiniLM-L6-v2",
        "source": source_str(),
        "dtype": "float32",
        "num_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "last_hidden_is_normed": False,
        "attn_implementation": ATTN,
        "has_pooler": has_pooler,
        "pooler_weights_in_safetensors": pooler_in_file,
        "weights": "fixtures/minilm/model.safetensors (f32)",
        "float_encoding": "per-element values: float32 shortest repr; norm/absmax: float64",
        "samples": samples,
    }


def true_smollm2_tokenizer(tok):
    """transformers' GGUF-converted tokenizer with SmolLM2's real pre-tokenizer restored."""
    from tokenizers import Tokenizer, pre_tokenizers
    fixed = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    fixed.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return fixed


def run_smollm2(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, attn_implementation=ATTN).eval()
    cfg = model.config
    true_tok = true_smollm2_tokenizer(tok)
    chat = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    texts = COMMON_TEXTS + [chat]
    captured = {}

    def hook(_mod, _inp, out):
        captured["last"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    handle = model.model.layers[-1].register_forward_hook(hook)
    samples = []
    normed = None
    adds_bos = None
    for text in texts:
        enc = tok(text, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        if true_tok.encode(text).ids != ids:
            raise SystemExit(f"tokenizer disagreement (GGUF-converted vs true SmolLM2) on {text!r}; pick another text")
        if adds_bos is None:
            adds_bos = ids[0] == tok.bos_token_id and not text.startswith(tok.bos_token or "\0")
        with torch.no_grad():
            base = model.model(**enc)  # LlamaModel: last_hidden_state
            captured.clear()
            out = model(**enc, output_hidden_states=True)
        hs = out.hidden_states
        assert len(hs) == cfg.num_hidden_layers + 1
        raw = captured.pop("last")
        is_normed = bool(torch.equal(hs[-1], model.model.norm(raw))) and not torch.equal(hs[-1], raw)
        assert normed is None or normed == is_normed
        normed = is_normed
        logits = out.logits[0, -1].double()
        top = torch.topk(out.logits[0, -1], 10)
        s = {"text": text, "input_ids": ids,
             "hidden": [state_stats(l, h[0]) for l, h in enumerate(hs)],
             "logits_last": {"top_ids": top.indices.tolist(),
                             "top_values": f32list(top.values),
                             "norm": float(torch.linalg.vector_norm(logits)),
                             "first": f32list(out.logits[0, -1, :NDIM])},
             "final_norm": state_stats(None, base.last_hidden_state[0]),
             "last_block_raw": state_stats(cfg.num_hidden_layers, raw[0])}
        samples.append(s)
    handle.remove()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return {
        "model": "SmolLM2-135M-Instruct",
        "source": source_str(),
        "dtype": "float32",
        "num_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "last_hidden_is_normed": normed,
        "attn_implementation": ATTN,
        "tokenizer_adds_bos": bool(adds_bos),
        "input_ids_match_true_tokenizer": True,
        "bos_token_id": tok.bos_token_id,
        "tie_word_embeddings": bool(tied),
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta,
        "weights": f"fixtures/smollm2/{SMOLLM2_GGUF} dequantized to f32 by transformers (q/k un-permuted to HF layout)",
        "float_encoding": "per-element values: float32 shortest repr; norm/absmax: float64",
        "samples": samples,
    }


def dump(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # one sample per line-ish: compact but diffable
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "fixtures"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "testdata", "reference"))
    ap.add_argument("--only", choices=["minilm", "smollm2"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if args.only in (None, "minilm"):
        dump(run_minilm(os.path.join(args.fixtures, "minilm")),
             os.path.join(args.out_dir, "minilm_forward.json"))
    if args.only in (None, "smollm2"):
        dump(run_smollm2(os.path.join(args.fixtures, "smollm2")),
             os.path.join(args.out_dir, "smollm2_forward.json"))


if __name__ == "__main__":
    sys.exit(main())
