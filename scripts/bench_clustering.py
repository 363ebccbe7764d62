#!/usr/bin/env python3
"""Activation clustering: trojanscan's PCA + k-means vs ART's ActivationDefence pipeline.

    python3 scripts/bench_clustering.py [--sizes 10000x384,100000x768] [--quick]
        [--latent gaussian|laplace] [--bin target/release/examples/cluster_bench]
        [--threads N] [--run-timeout S] [--json OUT.json] [--device cpu|cuda]

What is compared, on the same synthetic matrix, in one run:
  (a) sklearn PCA(n_components=10).fit_transform(x), then KMeans(n_clusters=2).fit on the result
  (b) sklearn FastICA(n_components=10, max_iter=1000, tol=0.005).fit_transform(x), then
      KMeans(n_clusters=2).fit on the result
  (c) trojanscan: `cluster_bench --input FILE --dims 10 --k 2 --seed 0` (PCA to 10 dims, then
      k-means), which prints one JSON line {"seconds", "load_seconds", "inertia", "iterations",
      "restarts"}; "seconds" is PCA + k-means wall time, excluding loading the safetensors file.
      Build it with `cargo build --release --example cluster_bench`; without it (c) is skipped.
      `--device cuda` runs (c) on the GPU (a binary built with `--features cuda`); the
      scikit-learn pipelines stay on the CPU, as ART runs them, and the timed region still
      ends with the labels back on the host.

(a) and (b) are what the Adversarial Robustness Toolbox (ART) runs for activation clustering
(module functions in art/defences/detector/poison/activation_defence.py; ART is not installed
here): `cluster_activations(..., nb_clusters=2, nb_dims=10, reduce="FastICA")` calls
`reduce_dimensionality`, which builds `FastICA(n_components=nb_dims, max_iter=1000, tol=0.005)`
(or `PCA(n_components=nb_dims)` with reduce="PCA"; FastICA is ActivationDefence's default) and
calls `fit_transform`, then `KMeans(n_clusters=nb_clusters).fit_predict` with sklearn's
defaults (timed here as `fit`, the same work). With scikit-learn >= 1.4 those defaults are
init="k-means++", n_init="auto" (= 1 run for k-means++), max_iter=300, tol=1e-4,
algorithm="lloyd"; FastICA's default whitening is "unit-variance" (>= 1.3). The only change
here is random_state=0 on both estimators, so that runs are repeatable; it does not change the
amount of work. ART clusters each class's
activations separately; one matrix here stands for one class.

Data: float32 "activation-like" matrices from a fixed numpy seed: a rank-16-plus-isotropic-noise
Gaussian main population (90% of rows) and a minority (10%) shifted along a random direction,
so that k = 2 has a meaningful answer (the "ARI" column is the adjusted Rand index of the
k-means labels against the planted split; 1.0 = minority recovered exactly). trojanscan reads
the same matrix from a temporary safetensors file (tensor "x").

Caveats visible in the output: on this Gaussian data FastICA usually runs all max_iter=1000
iterations without converging (Gaussian sources are not identifiable, so only the shift
direction is a well-defined independent component) and warns; (b)'s time is then a worst case.
`--latent laplace` draws the low-rank factors from a unit-variance Laplace distribution
(heavy-tailed, closer to real activations), where FastICA converges in a few iterations and its
time is dominated by the whitening SVD. Also, with sklearn's n_init=1, KMeans on FastICA's
unit-variance output often lands in a local optimum that misses the minority (low ARI for (b));
that is ART's behaviour with current sklearn, reported as is.

Timing: time.perf_counter around fit_transform + fit, each pipeline run once per size after one
warm-up of the sklearn code on a tiny matrix. sklearn/numpy run their BLAS (and OpenMP, for
KMeans) thread pools, listed at the top; trojanscan uses its own (rayon) pool. --threads N caps
both (threadpoolctl for sklearn/numpy, RAYON_NUM_THREADS for trojanscan); by default each uses
its library default.

Output, per size: seconds for each pipeline; "speedup" = sklearn seconds / trojanscan seconds
from this same run (> 1 means trojanscan is faster), against (a) and against (b); and the
k-means inertia of (c) against (a). Both are measured in a 10-dim PCA space of the same data
(the same subspace up to rotation and sign, which inertia does not see), so they are directly
comparable: a relative difference near 0 means both found the same clustering, a negative one
that trojanscan found a better (lower-inertia) one. (b)'s own inertia lives in FastICA's
unit-variance space and compares with nothing, so every pipeline's partition is also scored in
one common space: the within-cluster sum of squares of the original d-dim activations under
its labels ("raw inertia"; trojanscan's labels come from `cluster_bench --labels`). Lower is
better there for all three alike. --json OUT writes everything as JSON.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import sklearn
from safetensors.numpy import save_file
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "examples", "cluster_bench")
BUILD_HINT = "cargo build --release --example cluster_bench"
SEED = 0
DIMS, K = 10, 2  # ART's nb_dims and nb_clusters


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_sizes(text):
    sizes = []
    for item in text.split(","):
        n, d = item.lower().split("x")
        sizes.append((int(n), int(d)))
    return sizes


# ---------------------------------------------------------------- data
def make_data(n, d, seed=SEED, latent="gaussian", rank=16, noise=0.5, shift=10.0,
              minority=0.10):
    """Low-rank-plus-noise main population and a shifted minority; float32.

    latent: distribution of the rank-16 factors, "gaussian" or "laplace" (unit variance,
    heavy-tailed); the noise is always Gaussian.

    Returns (x, planted) where planted[i] is 1 for minority rows. The shift's share of the
    variance (minority * (1 - minority) * shift^2 = 9) is well above the largest low-rank
    variance (4), so the best 2-way split is main vs minority.
    """
    rng = np.random.default_rng(seed)
    rank = min(rank, d)
    # rank x d loadings with orthonormal rows, scaled so latent std goes 2.0 -> 0.5
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T
    loadings = (np.linspace(2.0, 0.5, rank)[:, None] * basis).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= noise
    if latent == "laplace":
        factors = (rng.laplace(size=(n, rank)) / np.sqrt(2)).astype(np.float32)
    else:
        factors = rng.standard_normal((n, rank), dtype=np.float32)
    x += factors @ loadings
    planted = np.zeros(n, dtype=np.int8)
    planted[rng.choice(n, int(round(minority * n)), replace=False)] = 1
    direction = rng.standard_normal(d)
    x[planted == 1] += (shift * direction / np.linalg.norm(direction)).astype(np.float32)
    return x, planted


def raw_inertia(x, labels):
    """Within-cluster sum of squares of the rows of x under labels (float64 sums)."""
    total = 0.0
    for c in np.unique(labels):
        rows = x[labels == c].astype(np.float64)
        total += float(((rows - rows.mean(axis=0)) ** 2).sum())
    return total


# ---------------------------------------------------------------- sklearn side (ART's pipeline)
def sklearn_pipeline(x, reduce, planted=None):
    if reduce == "PCA":
        projector = PCA(n_components=DIMS, random_state=SEED)
    else:
        projector = FastICA(n_components=DIMS, max_iter=1000, tol=0.005, random_state=SEED)
    clusterer = KMeans(n_clusters=K, random_state=SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        z = projector.fit_transform(x)
        t1 = time.perf_counter()
        clusterer.fit(z)
        t2 = time.perf_counter()
    res = {"seconds": t2 - t0, "reduce_seconds": t1 - t0, "kmeans_seconds": t2 - t1,
           "inertia": float(clusterer.inertia_), "kmeans_iterations": int(clusterer.n_iter_),
           "warnings": sorted({str(w.message).splitlines()[0] for w in caught})}
    if reduce == "FastICA":
        res["ica_iterations"] = int(projector.n_iter_)
    if planted is not None:
        res["ari"] = float(adjusted_rand_score(planted, clusterer.labels_))
    res["raw_inertia"] = raw_inertia(x, clusterer.labels_)
    return res


# ---------------------------------------------------------------- trojanscan side
def trojanscan_run(binary, path, threads, timeout, labels_path, device):
    cmd = [binary, "--input", path, "--dims", str(DIMS), "--k", str(K), "--seed", str(SEED),
           "--labels", labels_path, "--device", device]
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(cmd)}: {e}")
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{tail}")
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            res = json.loads(line)
            missing = {"seconds", "inertia"} - res.keys()
            if missing:
                raise RuntimeError(f"missing {sorted(missing)} in {line}")
            res["labels"] = np.fromfile(labels_path, dtype="<u4")
            return res
    raise RuntimeError(f"no JSON line on stdout: {p.stdout[-500:]!r}")


# ---------------------------------------------------------------- report
def fmt_s(x):
    return f"{x:9.3f}" if x is not None else f"{'-':>9}"


def print_size(r):
    n, d = r["n"], r["d"]
    print(f"\n== {n} x {d} float32 ({n * d * 4 / 1e6:.1f} MB, {r['latent']} factors), "
          f"planted minority {r['minority_rows']} rows ==")
    print(f"{'pipeline':<36}{'seconds':>9}  {'inertia':>12}  {'raw inertia':>12}  {'ARI':>5}  "
          f"notes")
    rows = [("(a) sklearn PCA(10) + KMeans(2)", r["sklearn_pca"]),
            ("(b) sklearn FastICA(10) + KMeans(2)", r["sklearn_fastica"]),
            ("(c) trojanscan PCA(10) + k-means(2)", r.get("trojanscan"))]
    for name, res in rows:
        if res is None:
            print(f"{name:<36}{fmt_s(None)}  {'-':>12}  {'-':>12}  {'-':>5}  "
                  f"skipped: {r['trojanscan_skipped']}")
            continue
        ari = f"{res['ari']:5.3f}" if "ari" in res else f"{'-':>5}"
        if "load_seconds" in res:
            notes = (f"load {res['load_seconds']:.3f} s, {res.get('iterations', '?')} iters, "
                     f"{res.get('restarts', '?')} restarts")
        else:
            notes = f"reduce {res['reduce_seconds']:.3f} s + kmeans {res['kmeans_seconds']:.3f} s"
            if "ica_iterations" in res:
                notes += f", ICA {res['ica_iterations']} iters"
            if res["warnings"]:
                notes += "; warning: " + "; ".join(w.split(". ")[0] for w in res["warnings"])
        print(f"{name:<36}{fmt_s(res['seconds'])}  {res['inertia']:12.6g}  "
              f"{res['raw_inertia']:12.6g}  {ari}  {notes}")
    if "speedup_vs_pca" in r:
        print(f"speedup (sklearn s / trojanscan s): vs (a) {r['speedup_vs_pca']:.2f}x, "
              f"vs (b) {r['speedup_vs_fastica']:.2f}x")
        print(f"inertia (c) vs (a), same PCA subspace: relative difference "
              f"{r['inertia_rel_diff']:+.3e}")
        print(f"raw inertia (c) vs (a) {r['raw_rel_diff_vs_pca']:+.3e}, "
              f"(c) vs (b) {r['raw_rel_diff_vs_fastica']:+.3e} (relative; < 0: (c) lower)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--sizes", default="10000x384,100000x768",
                    help="comma-separated NxD list (default 10000x384,100000x768)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2000x64 only")
    ap.add_argument("--latent", choices=["gaussian", "laplace"], default="gaussian",
                    help="distribution of the low-rank factors (default gaussian)")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="trojanscan cluster_bench binary")
    ap.add_argument("--threads", type=int, help="cap BLAS/OpenMP and rayon threads at N")
    ap.add_argument("--run-timeout", type=int, default=3600, help="seconds per trojanscan run")
    ap.add_argument("--json", metavar="OUT", help="also write results as JSON")
    ap.add_argument("--device", default="cpu", help="trojanscan's device: cpu, cuda or cuda:N")
    args = ap.parse_args()
    sizes = [(2000, 64)] if args.quick else parse_sizes(args.sizes)

    limits = threadpool_limits(limits=args.threads) if args.threads else None
    pools = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
             for p in threadpool_info()]
    print(f"CPU: {cpu_name()}  (os.cpu_count() = {os.cpu_count()})")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}")
    print("sklearn/numpy thread pools: " + ", ".join(
        f"{p['internal_api']} ({p['user_api']}) {p['num_threads']} threads" for p in pools))
    rayon = args.threads or os.environ.get("RAYON_NUM_THREADS") or f"default ({os.cpu_count()})"
    print(f"trojanscan: device {args.device}, RAYON_NUM_THREADS = {rayon}")

    have_bin = os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)
    skipped = None
    if not have_bin:
        skipped = f"{os.path.relpath(args.bin, ROOT)} not found"
        print(f"trojanscan binary {args.bin} not found; build it with:\n    {BUILD_HINT}\n"
              f"(skipping (c); sklearn pipelines only)")

    # warm-up: imports, BLAS/OpenMP pool start-up, sklearn's first-call validation paths
    warm, _ = make_data(500, 32, seed=SEED + 1)
    sklearn_pipeline(warm, "PCA")
    sklearn_pipeline(warm, "FastICA")

    results = []
    with tempfile.TemporaryDirectory(prefix="trojanscan-bench-") as tmp:
        for n, d in sizes:
            x, planted = make_data(n, d, latent=args.latent)
            r = {"n": n, "d": d, "latent": args.latent, "minority_rows": int(planted.sum())}
            print(f"\nrunning {n} x {d} ...", flush=True)
            r["sklearn_pca"] = sklearn_pipeline(x, "PCA", planted)
            r["sklearn_fastica"] = sklearn_pipeline(x, "FastICA", planted)
            path = os.path.join(tmp, f"x_{n}x{d}.safetensors")
            save_file({"x": x}, path)
            if have_bin:
                try:
                    t = r["trojanscan"] = trojanscan_run(args.bin, path, args.threads,
                                                         args.run_timeout, path + ".labels",
                                                         args.device)
                    labels = t.pop("labels")
                    t["ari"] = float(adjusted_rand_score(planted, labels))
                    t["raw_inertia"] = raw_inertia(x, labels)
                    for key, other in (("pca", "sklearn_pca"), ("fastica", "sklearn_fastica")):
                        o = r[other]["raw_inertia"]
                        r[f"raw_rel_diff_vs_{key}"] = (t["raw_inertia"] - o) / o
                    r["speedup_vs_pca"] = r["sklearn_pca"]["seconds"] / t["seconds"]
                    r["speedup_vs_fastica"] = r["sklearn_fastica"]["seconds"] / t["seconds"]
                    a = r["sklearn_pca"]["inertia"]
                    r["inertia_rel_diff"] = (t["inertia"] - a) / a
                except RuntimeError as e:
                    r["trojanscan_skipped"] = f"failed: {e}"
                    print(f"trojanscan run failed: {e}", file=sys.stderr)
            else:
                r["trojanscan_skipped"] = skipped
            os.remove(path)
            if os.path.exists(path + ".labels"):
                os.remove(path + ".labels")
            del x
            print_size(r)
            results.append(r)

    if args.json:
        out = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads_cap": args.threads,
               "thread_pools": pools, "python": platform.python_version(),
               "numpy": np.__version__, "sklearn": sklearn.__version__,
               "trojanscan_bin": args.bin, "device": args.device, "results": results}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nwrote {args.json}")
    if limits is not None:
        limits.restore_original_limits()


if __name__ == "__main__":
    main()
