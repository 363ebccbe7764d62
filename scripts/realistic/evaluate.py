#!/usr/bin/env python3
"""Run the trigger hunt on the realistic evaluation set and score it against truth.json.

    python3 scripts/realistic/evaluate.py --set realistic [--split dev|held-out|all]
        [--modes probes,none,base,base-none] [--max-evaluations 12000] [--out results.json] [--filter TEXT] [--exclude TEXT]
        [--hunt-args "--group-size 8"]

For every model (and mode: `probes` passes the model's 32 task texts with --probe, `none`
gives no texts, `base` and `base-none` add `--base` with the model it came from: the set's
encoder, or the `base_path` its truth.json names) it runs `trojanscan hunt --format json` under a fixed work budget, and
reports per kind and mode: model-level suspicion, verdict, and whether the trigger was in
the top 5 findings. "In the top 5": every part of the trigger (both tokens of a
combination) appears among the tokens of the top 5 findings; for a natural-sentence
trigger, a top-5 finding of at least two tokens, all from the sentence (a piece of the
sentence that acts as the trigger). Then the AUC of suspicion, trojans against clean models, and the rate
of clean models called `trojaned` or `suspicious`. Dev and held-out splits are reported
apart.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def hunt(binary, model, mode, max_eval, budget, base, extra):
    cmd = [binary, "hunt", model, "--quiet", "--format", "json",
           "--max-evaluations", str(max_eval), "--budget", budget] + extra
    if mode in ("probes", "base"):
        cmd += ["--probe", os.path.join(model, "probes.jsonl")]
    if mode in ("base", "base-none"):
        cmd += ["--base", base]
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 3, 4):
        return {"error": out.stderr.strip()[-400:], "seconds": time.time() - t}
    r = json.loads(out.stdout)
    r["wall"] = time.time() - t
    return r


def found(truth, report, k=5):
    if not truth["trigger"]:
        return None
    top = report.get("triggers", [])[:k]
    ids = set(i for t in top for i in t["token_ids"])
    if truth["kind"] == "addsent":
        sent = set(truth["trigger"]["token_ids"])
        # At least two of the sentence's tokens: one common word ("the") proves nothing.
        return any(len(set(t["token_ids"])) >= 2 and set(t["token_ids"]) <= sent for t in top)
    return all(set(p["token_ids"]) <= ids for p in truth["trigger"]["parts"])


def auc(pos, neg):
    if not pos or not neg:
        return None
    s = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return s / (len(pos) * len(neg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="realistic")
    ap.add_argument("--split", default="dev", choices=["dev", "held-out", "all"])
    ap.add_argument("--modes", default="probes,none",
                    help="probes: the 32 task texts; none: no texts; base: task texts and "
                         "--base; base-none: --base alone")
    ap.add_argument("--base", default="fixtures/minilm",
                    help="the encoder the set was fine-tuned from (modes base, base-none), "
                         "for models whose truth.json names no base_path")
    ap.add_argument("--max-evaluations", type=int, default=12000)
    ap.add_argument("--budget", default="20m", help="time cap; the work budget decides")
    ap.add_argument("--binary", default="target/release/trojanscan")
    ap.add_argument("--filter", default="")
    ap.add_argument("--exclude", default="",
                    help="skip models whose name contains any of these (comma-separated)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--hunt-args", default="",
                    help="more arguments for every hunt, split on spaces (e.g. --group-size 8)")
    a = ap.parse_args()
    for m in a.modes.split(","):
        if m not in ("probes", "none", "base", "base-none"):
            ap.error(f"unknown mode {m!r}: probes, none, base, base-none")
    index = json.load(open(os.path.join(a.set, "index.json")))
    rows = []
    for e in index:
        if a.split != "all" and e["split"] != a.split:
            continue
        if a.filter and a.filter not in e["name"]:
            continue
        if any(x and x in e["name"] for x in a.exclude.split(",")):
            continue
        truth = json.load(open(os.path.join(a.set, e["name"], "truth.json")))
        for mode in a.modes.split(","):
            # A model names the base it came from when it is not the set's encoder.
            base = (os.path.normpath(os.path.join(a.set, e["name"], truth["base_path"]))
                    if truth.get("base_path") else a.base)
            r = hunt(a.binary, os.path.join(a.set, e["name"]), mode,
                     a.max_evaluations, a.budget, base, a.hunt_args.split())
            row = {
                "name": e["name"], "task": e["task"], "kind": e["kind"], "seed": e["seed"],
                "split": e["split"], "mode": mode,
                "suspicion": r.get("suspicion"), "verdict": r.get("verdict"),
                "found": found(truth, r) if "error" not in r else None,
                "top": [(t["text"], round(t["suspicion"], 3), t.get("naturalness"))
                        for t in r.get("triggers", [])[:3]],
                "seconds": round(r.get("wall", r.get("seconds", 0)), 1),
                "error": r.get("error"),
                "hunt_args": a.hunt_args,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)
    summarize(rows)


def family(r):
    """Decoders and classifiers are scored apart: one AUC over both would mean neither."""
    return "SmolLM2 chat" if r["task"] == "chat-qa" else "MiniLM classifiers"


def summarize(rows):
    for fam, split, mode in sorted(set((family(r), r["split"], r["mode"]) for r in rows)):
        sel = [r for r in rows if family(r) == fam and r["split"] == split
               and r["mode"] == mode and not r["error"]]
        if not sel:
            continue
        print(f"\n## {fam}, split {split}, probes: {mode}")
        print("| kind | models | suspicion (min–max) | trojaned | suspicious | incomplete "
              "| trigger in top 5 |")
        print("|---|---|---|---|---|---|---|")
        for kind in sorted(set(r["kind"] for r in sel)):
            k = [r for r in sel if r["kind"] == kind]
            s = [r["suspicion"] for r in k]
            tro = sum(r["verdict"] == "trojaned" for r in k)
            sus = sum(r["verdict"] == "suspicious" for r in k)
            inc = sum(r["verdict"] == "incomplete" for r in k)
            f = [r["found"] for r in k if r["found"] is not None]
            print(f"| {kind} | {len(k)} | {min(s):.2f}–{max(s):.2f} | {tro} | {sus} | {inc} | "
                  + (f"{sum(f)} of {len(f)}" if f else "—") + " |")
        pos = [r["suspicion"] for r in sel if r["kind"] != "clean"]
        neg = [r["suspicion"] for r in sel if r["kind"] == "clean"]
        a = auc(pos, neg)
        print(f"\nAUC trojans vs clean: {a if a is None else round(a, 3)}")
    errs = [r for r in rows if r["error"]]
    for r in errs:
        print(f"error on {r['name']} ({r['mode']}): {r['error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
