#!/usr/bin/env python3
"""Trigger-hunt sweep throughput: trojanscan's single-token sweep vs an equivalent PyTorch loop.

    HF_HUB_OFFLINE=1 python3 scripts/bench_hunt.py [--models minilm,smollm2] [--threads 2]
        [--candidates K] [--budget 60s] [--quick] [--bin target/release/trojanscan]
        [--attn sdpa|eager] [--skip-rust] [--skip-torch] [--json OUT.json]

Both sides are measured in ONE run (one after the other, never at the same time) and the
script prints rows/s for each and the ratio trojanscan / PyTorch (> 1: trojanscan is faster).
A "row" is one candidate x probe evaluation: one probe sentence with one candidate token
inserted, run through the model (f32, CPU, right padding, 256 rows per forward pass) and
scored by the hunt's objective.

Models:
    MiniLM  (fixtures/minilm, bare BERT encoder)       objective "representation"
    SmolLM2 (fixtures/smollm2/*.Q4_1.gguf, decoder)    objective "next-token"
        trojanscan's hunt loads GGUF weights dequantized to f32 (it needs them for gradients);
        transformers dequantizes the GGUF to f32 as well, so both sides run f32.

trojanscan side
---------------
`trojanscan hunt MODEL --max-len 1 --budget B --quiet --format json` with RAYON_NUM_THREADS =
--threads and the default probes (the 16 BUILTIN_PROBES, read from src/hunt/probes.rs, x 3
insertion points (start, end, one random word boundary) = 48 probe rows per candidate). With --max-len 1 the hunt runs: null
(48 one-token common-word sequences on all 48 rows), proposals (gradient + embedding-norm
proposals; backward passes, not counted as evaluations), sweep (screen every candidate on 8 of the 48 rows, 32 candidates = 256
rows per forward, until 65% of the budget is spent; then confirm the best <= 256 on all 48
rows, and a population sample of 96 on all 48 rows), targets (decoders: 4-step greedy
continuations on 8 rows for each reported finding). The JSON report gives each stage's
seconds, candidates and `evaluations` (rows it ran), and `time`: the evaluation time split
into building rows, forward and objective.

The headline figure is the SWEEP STAGE's rows/s (its evaluations / its seconds). The
confirm/population rows in it are the same kind of row (a probe plus one token) but padded to
the longest of all 16 probes instead of 8, so they cost a little more per row than screening
rows. The whole-hunt rate (evaluations / hunt seconds, which also counts the un-rowed
gradient-proposal time) is printed as well.

PyTorch side
------------
The same work as trojanscan's screening batches: the 8 probes trojanscan screens on (probes
0, 2, ..., 14 of BUILTIN_PROBES, copied below), tokenized once up front with special tokens
(transformers' default), each with one insertion point drawn from the probe's word boundaries
with random.Random(0) (trojanscan draws them with its own seeded RNG, so the points differ,
not the amount of work). K candidates = word-initial vocabulary ids from the highest id down
(WordPiece: not "##..." and not [unused*]/special; byte-level BPE: "Ġ..." tokens), 32
candidates x 8 probes = 256 rows per forward. Per batch, timed: building the id rows (insert
the token, right-pad with the pad id, attention mask, tensors), `torch.no_grad()` forward
(eval mode, attn_implementation --attn; for SmolLM2 the forward includes gathering the final
hidden state at each row's last real token and the LM head on those rows only, where
trojanscan's forward also ends), and the objective:
    MiniLM:  mean pooling of last_hidden_state over the mask, then trojanscan's
             representation effect against the clean probes' pooled vectors (displacement,
             drag = |mean displacement| / clean spread, consistency = mean cosine to the mean
             displacement, collapse = 1 - spread / clean spread), per candidate.
    SmolLM2: log_softmax of those next-token logits, KL against the clean probe's next-token
             log-probs, argmax, and the per-candidate takeover count.
One untimed warm-up batch first (32 candidates for MiniLM, 4 for SmolLM2). Reported: rows/s =
K * 8 / (sum of the three timed parts), and the split of the time between them.

Budgets: the null (48 x 48 = 2304 rows) runs before the sweep whatever the budget; the
confirmation and population always measure at least 8 candidates each. Where the null alone
takes longer than 65% of the budget (SmolLM2 on a slow or busy CPU), the sweep screens
nothing and the script says so: raise --budget.

Caveats: the two sides do not screen the same candidate tokens (trojanscan starts with its
gradient / embedding-norm proposals, then goes by rarity; the lengths of the tokens' rows are
the same: probe + 1 token), the insertion points differ, and the trojanscan figure includes
the confirm / population rows described above. Use the full defaults for numbers worth
quoting; --quick (K = 64 / 32, budget 15 s) is a smoke test only: with a 15 s budget the
sweep runs a few seconds (SmolLM2: possibly no screening at all) and the rates are noise.
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "trojanscan")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"



def builtin_probes():
    """trojanscan's BUILTIN_PROBES, read from src/hunt/probes.rs (one source of truth)."""
    import re
    with open(os.path.join(ROOT, "src", "hunt", "probes.rs")) as f:
        src = f.read()
    body = src[src.index("pub const BUILTIN_PROBES"):]
    body = body[: body.index("];")]
    return [json.loads(m) for m in re.findall(r'"(?:[^"\\]|\\.)*"', body)]


BUILTIN_PROBES = builtin_probes()

# HuntParams defaults (src/hunt/mod.rs) the PyTorch side mirrors.
INSERTIONS = 3          # insertion points per probe (start, end, one random boundary)
SCREEN_ROWS = 8         # rows each candidate is screened on
BATCH_ROWS = 256        # rows per forward pass
# The probes behind the screen rows when no clean predictions group them (a bare encoder):
# per insertion point, 8 evenly spaced rows, the points taking turns (rows 0, 1, 2, 6, 7, 8,
# 12, 13 of 48; probe n has rows 3n, 3n+1, 3n+2). A decoder's rows are grouped by its clean
# next token first, so there they are only approximately these probes.
_per = [[r for r in range(len(BUILTIN_PROBES) * INSERTIONS) if r % INSERTIONS == s]
        for s in range(INSERTIONS)]
_per = [[rows[j * len(rows) // min(len(rows), SCREEN_ROWS)]
         for j in range(min(len(rows), SCREEN_ROWS))] for rows in _per]
SCREEN_PROBES = sorted(r // INSERTIONS for r in
                       [x for j in range(SCREEN_ROWS) for lst in _per if j < len(lst)
                        for x in [lst[j]]][:SCREEN_ROWS])

MODELS = {
    # name: (label, path, kind, default K, default budget s, quick K)
    "minilm": ("all-MiniLM-L6-v2", os.path.join(ROOT, "fixtures", "minilm"), "bert", 512, 60, 64),
    "smollm2": ("SmolLM2-135M-Instruct", os.path.join(ROOT, "fixtures", "smollm2", SMOLLM2_GGUF),
                "gguf", 64, 120, 32),
}
QUICK_BUDGET = 15


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_seconds(s):
    """`90s`, `2m`, `1h`, `1500ms` or plain seconds (as trojanscan parses --budget)."""
    s = s.strip()
    for unit, mul in (("ms", 1e-3), ("min", 60), ("s", 1), ("m", 60), ("h", 3600)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * mul
    return float(s)


# ---------------------------------------------------------------- PyTorch side
class TorchSide:
    """Model, tokenizer, probes and the clean reference for one model."""

    def __init__(self, path, kind, threads, attn):
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        torch.set_num_threads(threads)
        self.kind = kind
        t = time.perf_counter()
        kw = dict(dtype=torch.float32, attn_implementation=attn)
        if kind == "gguf":
            d, f = os.path.dirname(path), os.path.basename(path)
            self.tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
            lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, **kw).eval()
            self.base, self.lm_head = lm.model, lm.lm_head
            self.model = lm
        else:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path, **kw).eval()
        self.load_seconds = time.perf_counter() - t
        self.special = set(self.tok.all_special_ids)
        if self.tok.pad_token_id is not None:
            self.pad_id = self.tok.pad_token_id
        else:
            self.pad_id = self.tok.eos_token_id if self.tok.eos_token_id is not None else 0
        n = max(len(self.tok), self.model.config.vocab_size)
        self.tokens = self.tok.convert_ids_to_tokens(list(range(min(n, len(self.tok)))))
        self.build_probes()
        self.clean_reference()

    # -- vocabulary
    def word_start(self, i):
        if i in self.special or i >= len(self.tokens):
            return False
        t = self.tokens[i] or ""
        if self.kind == "bert":
            return not t.startswith("##") and not (t.startswith("[") and t.endswith("]"))
        return t.startswith("\u0120") and len(t) > 1

    def candidates(self, k):
        out = []
        for i in range(len(self.tokens) - 1, -1, -1):
            if self.word_start(i):
                out.append(i)
                if len(out) == k:
                    break
        return out

    # -- probes: tokenized once, one insertion point each (as src/hunt/probes.rs::build)
    def build_probes(self):
        rng = random.Random(0)
        self.probes = []
        for n in SCREEN_PROBES:
            ids = self.tok(BUILTIN_PROBES[n])["input_ids"]
            lead = 0
            while lead < len(ids) and ids[lead] in self.special:
                lead += 1
            bounds = [i for i in range(lead, len(ids)) if i == lead or self.word_start(ids[i])]
            if self.kind == "bert":
                tail = len(ids)
                while tail > lead and ids[tail - 1] in self.special:
                    tail -= 1
                if tail > lead and tail not in bounds:
                    bounds.append(tail)
            self.probes.append((ids, rng.choice(bounds)))

    def rows_for(self, cands):
        return [ids[:at] + [c] + ids[at:] for c in cands for ids, at in self.probes]

    def make_batch(self, rows):
        torch = self.torch
        s = max(len(r) for r in rows)
        ids = torch.full((len(rows), s), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), s), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return ids, mask

    def forward(self, ids, mask):
        """Per-row output: pooled states (bert) or next-token log-probs (decoder)."""
        torch = self.torch
        with torch.no_grad():
            if self.kind == "bert":
                h = self.model(input_ids=ids, attention_mask=mask,
                               token_type_ids=torch.zeros_like(ids)).last_hidden_state
                return h, mask
            # trojanscan's decoder forward also ends here: final hidden state gathered at the
            # last real token, then the LM head on those rows only.
            h = self.base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = mask.sum(1) - 1
            return self.lm_head(h[torch.arange(h.shape[0]), last]), mask

    def head(self, out):
        """Pooling (encoder) or log-softmax (decoder): trojanscan's Evaluator::head."""
        torch = self.torch
        h, mask = out
        with torch.no_grad():
            if self.kind == "bert":
                m = mask.to(h.dtype).unsqueeze(2)
                return (h * m).sum(1) / m.sum(1)
            return torch.log_softmax(h.float(), dim=-1)

    def clean_reference(self):
        torch = self.torch
        ids, mask = self.make_batch([ids for ids, _ in self.probes])
        y = self.head(self.forward(ids, mask))
        if self.kind == "bert":
            self.clean = y.double()
            c = self.clean.mean(0)
            self.spread0 = max(float((self.clean - c).norm(dim=1).mean()), 1e-6)
        else:
            self.clean = y
            self.clean_pred = y.argmax(-1).tolist()

    def objective(self, y, n):
        """Per-candidate effects (score, detail), as src/hunt/objective.rs::aggregate."""
        torch = self.torch
        p = len(self.probes)
        with torch.no_grad():
            if self.kind == "bert":
                rows = y.double().reshape(n, p, -1)
                disp = rows - self.clean.unsqueeze(0)
                mean = disp.mean(1, keepdim=True)
                mn = mean.norm(dim=2)                                   # [n, 1]
                dn = disp.norm(dim=2)                                   # [n, p]
                cos = (disp * mean).sum(2) / (dn * mn).clamp_min(1e-300)
                cos = torch.where((dn == 0) | (mn == 0), torch.zeros_like(cos), cos)
                drag = mn.squeeze(1) / self.spread0
                score = drag * cos.mean(1).clamp_min(0)
                centre = rows.mean(1, keepdim=True)
                detail = 1 - (rows - centre).norm(dim=2).mean(1) / self.spread0
                return list(zip(score.tolist(), detail.tolist()))
            clean = self.clean.repeat(n, 1)
            kl = (y.exp() * (y - clean)).sum(-1).reshape(n, p)
            arg = y.argmax(-1).reshape(n, p).tolist()
            kl_mean = kl.mean(1).tolist()
            out = []
            for c in range(n):
                counts = {}
                for a, a0 in zip(arg[c], self.clean_pred):
                    if a != a0:
                        counts[a] = counts.get(a, 0) + 1
                best = max(counts.values()) if counts else 0
                out.append((best / p, kl_mean[c]))
            return out

    def sweep(self, cands, warmup):
        per_batch = max(BATCH_ROWS // len(self.probes), 1)
        if warmup:
            self.objective(self.head(self.forward(*self.make_batch(self.rows_for(
                cands[:warmup])))), len(cands[:warmup]))
        t_build = t_fwd = t_obj = 0.0
        effects = []
        forwards = 0
        for i in range(0, len(cands), per_batch):
            chunk = cands[i: i + per_batch]
            t0 = time.perf_counter()
            ids, mask = self.make_batch(self.rows_for(chunk))
            t1 = time.perf_counter()
            out = self.forward(ids, mask)
            t2 = time.perf_counter()
            effects.extend(self.objective(self.head(out), len(chunk)))
            t3 = time.perf_counter()
            t_build += t1 - t0
            t_fwd += t2 - t1
            t_obj += t3 - t2
            forwards += 1
        total = t_build + t_fwd + t_obj
        rows = len(cands) * len(self.probes)
        best = max(effects) if effects else None
        return {"candidates": len(cands), "rows": rows, "forwards": forwards,
                "seconds": total, "rows_per_s": rows / total if total > 0 else None,
                "build_seconds": t_build, "forward_seconds": t_fwd, "objective_seconds": t_obj,
                "best_effect": best}


def torch_bench(path, kind, k, threads, attn):
    side = TorchSide(path, kind, threads, attn)
    cands = side.candidates(k)
    res = side.sweep(cands, warmup=32 if kind == "bert" else 4)
    res["load_seconds"] = side.load_seconds
    res["probe_lengths"] = [len(ids) for ids, _ in side.probes]
    res["insert_at"] = [at for _, at in side.probes]
    res["first_candidates"] = [side.tokens[i] for i in cands[:5]]
    res["bos_added"] = side.probes[0][0][0] in side.special if side.probes else None
    del side
    return res


# ---------------------------------------------------------------- trojanscan side
def rust_bench(binary, path, budget, threads, timeout):
    cmd = [binary, "hunt", path, "--max-len", "1", "--budget", f"{budget:g}s", "--quiet",
           "--format", "json"]
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(cmd)}: {e}")
    wall = time.perf_counter() - t
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{tail}")
    try:
        rep = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"unparsable JSON ({e}): {p.stdout[-500:]!r}")
    return account(rep, wall, cmd)


def account(rep, wall, cmd):
    """Rows and rates from a hunt report: every stage reports the rows it ran."""
    stages = {s["name"]: s for s in rep["stages"]}
    width = rep["probes"]
    sw = stages.get("sweep", {"seconds": 0.0, "candidates": 0, "evaluations": 0})
    sweep_rows = sw["evaluations"]
    hunt_seconds = rep["seconds"]
    t = rep["time"]
    work = (t["rows"] + t["forward"] + t["objective"]) or 1.0
    return {
        "command": " ".join(cmd), "wall_seconds": wall, "objective": rep["objective"],
        "probe_rows": width, "evaluations": rep["evaluations"], "candidates": rep["candidates"],
        "budget_exhausted": rep.get("budget_exhausted"), "notes": rep.get("notes", []),
        "stages": [{"name": s["name"], "seconds": s["seconds"], "candidates": s["candidates"],
                    "evaluations": s["evaluations"]} for s in rep["stages"]],
        "sweep_seconds": sw["seconds"], "sweep_candidates": sw["candidates"],
        "sweep_rows": sweep_rows,
        "sweep_rows_per_s": sweep_rows / sw["seconds"] if sw["seconds"] > 0 and sweep_rows else None,
        "hunt_seconds": hunt_seconds,
        "hunt_rows_per_s": rep["evaluations"] / hunt_seconds if hunt_seconds > 0 else None,
        "time_split": {k: t[k] / work for k in ("forward", "rows", "objective")},
    }


# ---------------------------------------------------------------- report
def fmt(x, spec=",.0f"):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def print_model(r):
    print(f"\n== {r['model']} ({r['kind']}), threads {r['threads']} ==")
    pt, rs = r.get("pytorch"), r.get("trojanscan")
    if pt:
        tot = pt["seconds"] or 1.0
        print(f"PyTorch   : {pt['candidates']} candidates x {SCREEN_ROWS} probes = {pt['rows']} rows "
              f"in {pt['forwards']} forwards, {pt['seconds']:.2f} s -> {fmt(pt['rows_per_s'])} rows/s "
              f"(load {pt['load_seconds']:.1f} s, untimed)")
        print(f"            time: forward {pt['forward_seconds']:.2f} s "
              f"({100 * pt['forward_seconds'] / tot:.0f}%), pooling/log-softmax + objective "
              f"{pt['objective_seconds']:.3f} s "
              f"({100 * pt['objective_seconds'] / tot:.1f}%), batch building "
              f"{pt['build_seconds']:.3f} s ({100 * pt['build_seconds'] / tot:.1f}%)")
        print(f"            probe lengths {pt['probe_lengths']} (with specials; leading special "
              f"{'yes' if pt['bos_added'] else 'no'}), insert at {pt['insert_at']}, "
              f"first candidates {pt['first_candidates']}")
    elif r.get("pytorch_error"):
        print(f"PyTorch   : failed: {r['pytorch_error']}")
    if rs:
        print(f"trojanscan: {rs['command']}")
        print(f"            objective {rs['objective']}, {rs['probe_rows']} probe rows/candidate, "
              f"wall {rs['wall_seconds']:.1f} s (incl. load), stages: " + ", ".join(
                  f"{s['name']} {s['seconds']:.2f} s/{s['candidates']}" for s in rs["stages"]))
        print(f"            sweep: {rs['sweep_candidates']} candidates, {rs['sweep_rows']} rows "
              f"in {rs['sweep_seconds']:.2f} s -> {fmt(rs['sweep_rows_per_s'])} rows/s")
        ts = rs["time_split"]
        print(f"            whole hunt: {rs['evaluations']} evaluations / {rs['hunt_seconds']:.2f} s "
              f"-> {fmt(rs['hunt_rows_per_s'])} rows/s; evaluation time: forward "
              f"{ts['forward']:.0%}, building rows {ts['rows']:.1%}, objective {ts['objective']:.1%}")
        for n in rs["notes"]:
            print(f"            note: {n}")
        if not rs["sweep_rows"]:
            print("            (the sweep screened nothing: the null and proposals used up its share of "
                  "the budget; raise --budget)")
    elif r.get("trojanscan_error"):
        print(f"trojanscan: failed: {r['trojanscan_error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--models", default="minilm,smollm2", help="comma-separated: minilm, smollm2")
    ap.add_argument("--candidates", type=int,
                    help="PyTorch candidates K (default 512 MiniLM, 64 SmolLM2; --quick 64 / 32)")
    ap.add_argument("--budget", help="trojanscan --budget (default 60s MiniLM, 120s SmolLM2; "
                    f"--quick {QUICK_BUDGET}s)")
    ap.add_argument("--quick", action="store_true", help="smoke test: small K, 15 s budget")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads and RAYON_NUM_THREADS (default 2)")
    ap.add_argument("--attn", default="sdpa", help="PyTorch attn_implementation (default sdpa)")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="trojanscan binary")
    ap.add_argument("--run-timeout", type=int, help="seconds per trojanscan run "
                    "(default 3 x budget + 300)")
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="also write results as JSON")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (expected {', '.join(MODELS)})")

    import torch
    import transformers
    cpu = cpu_name()
    print(f"CPU: {cpu}  ({os.cpu_count()} logical cpus)  threads: {args.threads}")
    print(f"torch {torch.__version__} / transformers {transformers.__version__}  attn={args.attn}"
          f"{'  (--quick: smoke test, timings not meaningful)' if args.quick else ''}")
    have_bin = os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)
    if not args.skip_rust and not have_bin:
        print(f"trojanscan binary {args.bin} not found (cargo build --release); "
              f"PyTorch side only")
    print(flush=True)

    results = []
    for name in names:
        label, path, kind, k_def, b_def, k_quick = MODELS[name]
        k = args.candidates or (k_quick if args.quick else k_def)
        budget = parse_seconds(args.budget) if args.budget else (QUICK_BUDGET if args.quick else b_def)
        r = {"model": label, "key": name, "kind": kind, "path": os.path.relpath(path, ROOT),
             "threads": args.threads, "budget_seconds": budget}
        if not args.skip_rust and have_bin:
            print(f"[{name}] trojanscan hunt, budget {budget:g} s ...", flush=True)
            try:
                r["trojanscan"] = rust_bench(args.bin, path, budget, args.threads,
                                             args.run_timeout or int(3 * budget + 300))
            except Exception as e:  # noqa: BLE001
                r["trojanscan_error"] = str(e)
                print(f"trojanscan side failed: {e}", file=sys.stderr, flush=True)
        if not args.skip_torch:
            print(f"[{name}] PyTorch sweep, {k} candidates ...", flush=True)
            try:
                r["pytorch"] = torch_bench(path, kind, k, args.threads, args.attn)
            except Exception as e:  # noqa: BLE001
                r["pytorch_error"] = f"{type(e).__name__}: {e}"
                print(f"PyTorch side failed: {r['pytorch_error']}", file=sys.stderr, flush=True)
        pt, rs = r.get("pytorch"), r.get("trojanscan")
        r["ratio"] = (rs["sweep_rows_per_s"] / pt["rows_per_s"]
                      if pt and rs and rs["sweep_rows_per_s"] and pt["rows_per_s"] else None)
        r["ratio_whole_hunt"] = (rs["hunt_rows_per_s"] / pt["rows_per_s"]
                                 if pt and rs and rs["hunt_rows_per_s"] and pt["rows_per_s"] else None)
        print_model(r)
        print(flush=True)
        results.append(r)

    print(f"CPU: {cpu}   threads: {args.threads}"
          f"{'   QUICK RUN: smoke test, rates not meaningful' if args.quick else ''}")
    hdr = (f"{'model':<24} {'objective':<15} {'PyTorch rows/s':>15} {'trojanscan sweep rows/s':>24} "
           f"{'ratio':>7} {'(whole hunt)':>13}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        pt, rs = r.get("pytorch"), r.get("trojanscan")
        obj = rs["objective"] if rs else ("representation" if r["kind"] == "bert" else "next-token")
        ratio = fmt(r["ratio"], ".2f")
        whole = fmt(r["ratio_whole_hunt"], ".2f")
        print(f"{r['model']:<24} {obj:<15} {fmt(pt and pt['rows_per_s']):>15} "
              f"{fmt(rs and rs['sweep_rows_per_s']):>24} {ratio:>7} {whole:>13}")
    print("ratio = trojanscan sweep-stage rows/s / PyTorch rows/s (> 1: trojanscan faster); "
          "(whole hunt) uses evaluations / total hunt seconds instead")

    if args.json:
        out = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": args.threads,
               "attn_implementation": args.attn, "quick": args.quick,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version(), "trojanscan_bin": args.bin,
               "results": results}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
