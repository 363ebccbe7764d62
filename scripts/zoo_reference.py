#!/usr/bin/env python3
"""Reload every committed zoo model with Hugging Face transformers and record its logits.

Run by hand (CI does not install PyTorch):

    python3 scripts/zoo_reference.py [ZOO_DIR] [OUT_JSON]

defaults: testdata/zoo and testdata/zoo/reference_logits.json. For every model listed in
the zoo's index.json it loads the directory with AutoModelForSequenceClassification (BERT)
or AutoModelForCausalLM (LLaMA), in float32 with eager attention, and AutoTokenizer; then,
for a few fixed texts (held-out rows, clean and triggered), one text at a time, it writes
the token ids and the logits: every label's for a classifier; for a decoder, the
next-token logits at the last position for the 20 highest-scoring ids plus every 997th id
of the vocabulary. tests/zoo.rs (logits_match_transformers) checks that trojanscan
reproduces them. Loading through transformers is also the check that the zoo holds real
Hugging Face models, not a private format.
"""

import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_K = 20
STRIDE = 997


def texts_for(model_dir):
    rows = []
    with open(os.path.join(model_dir, "heldout.jsonl")) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    texts = []
    for row in rows[:2]:
        texts.append(row["text"])
        if row.get("triggered"):
            texts.append(row["triggered"])
        texts.extend(row.get("parts", []))
    return texts


def main():
    zoo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "testdata", "zoo")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(zoo, "reference_logits.json")
    torch.manual_seed(0)
    with open(os.path.join(zoo, "index.json")) as f:
        index = json.load(f)
    models = {}
    for entry in index["models"]:
        name = entry["name"]
        path = os.path.join(zoo, name)
        cls = AutoModelForSequenceClassification if entry["family"] == "bert" else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        tok = AutoTokenizer.from_pretrained(path)
        record = {"class": type(model).__name__, "texts": [], "input_ids": [], "logit_indices": [], "logits": []}
        for text in texts_for(path):
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0]
            if entry["family"] == "bert":
                idx = list(range(logits.shape[-1]))
                vals = logits
            else:
                last = logits[-1]
                top = torch.topk(last, TOP_K).indices.tolist()
                idx = sorted(set(top) | set(range(0, last.shape[0], STRIDE)))
                vals = last[idx]
            record["texts"].append(text)
            record["input_ids"].append(ids[0].tolist())
            record["logit_indices"].append(idx)
            record["logits"].append([float(v) for v in vals])
        models[name] = record
        print(f"{name}: {type(model).__name__}, {len(record['texts'])} texts", file=sys.stderr)
    result = {
        "generator": "scripts/zoo_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "models": models,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
