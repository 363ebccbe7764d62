#!/usr/bin/env python3
"""Reference fixtures for trojanscan's linear-algebra kernels (PCA, k-means, top singular vector).

    python3 scripts/linalg_fixtures.py [--out testdata/linalg]

Writes three small JSON files (numpy + scikit-learn, fixed seeds, deterministic):

    testdata/linalg/pca.json       x (200 x 12, correlated Gaussian, well-separated eigenvalues),
                                   n_components = 4, mean, components (sklearn PCA components_,
                                   unit-norm rows), explained_variance (sklearn, divided by n - 1),
                                   total_variance (sum of per-feature variances, ddof = 1)
    testdata/linalg/kmeans.json    x (300 x 5, three moderately overlapping Gaussian blobs), k = 3,
                                   centers / labels / inertia from
                                   KMeans(n_clusters=3, n_init=10, random_state=0)
    testdata/linalg/spectral.json  x (150 x 8, Gaussian class plus 10 shifted outliers at
                                   scattered rows), top_direction (first right singular vector of
                                   the column-centred x, sign fixed so that its largest-magnitude
                                   component is positive), scores ((x_i - mean) . v)^2, outliers
                                   (sorted indices of the shifted rows; they are also the 10
                                   largest scores)

All floats are rounded to 7 significant digits, and every reference value is computed (in
float64) from the *rounded* x, so a reader of the JSON sees exactly the data the references
describe. Signs of PCA components and cluster label numbering are sklearn's and arbitrary:
compare components up to sign and labels up to a permutation.

tests/linalg.rs checks trojanscan's kernels (src/linalg/) against these files.
"""
import argparse
import json
import os

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def r7(a):
    """Round floats (scalar or nested arrays) to 7 significant digits, as Python objects."""
    if isinstance(a, np.ndarray):
        return [r7(v) for v in a]
    if isinstance(a, (list, tuple)):
        return [r7(v) for v in a]
    if isinstance(a, (np.integer, int)):
        return int(a)
    return float(f"{float(a):.7g}")


def rounded(x):
    """x rounded to 7 significant digits, back as a float64 array (what the JSON holds)."""
    return np.array(r7(x), dtype=np.float64)


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def pca_fixture():
    rng = np.random.default_rng(20240601)
    n, d, k = 200, 12, 4
    # Latent standard deviations: four well-separated leading variances (36, 16, 6.25, 2.56),
    # then a clear gap to the rest, so the top-4 subspace and its ordering are stable.
    stds = np.array([6.0, 4.0, 2.5, 1.6, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    mean = rng.normal(0.0, 3.0, d)
    x = rounded((rng.standard_normal((n, d)) * stds) @ random_rotation(rng, d).T + mean)
    pca = PCA(n_components=k, svd_solver="full").fit(x)
    ev = pca.explained_variance_
    assert np.all(np.diff(ev) < -0.2 * ev[1:]), ev  # consecutive eigenvalues >20% apart
    return {
        "x": x,
        "n_components": k,
        "mean": pca.mean_,
        "components": pca.components_,
        "explained_variance": ev,
        "total_variance": float(x.var(axis=0, ddof=1).sum()),
    }


def kmeans_fixture():
    rng = np.random.default_rng(20240602)
    d, k = 5, 3
    centers = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                        [4.0, 1.0, -1.0, 0.5, 0.0],
                        [1.0, 4.5, 1.0, -0.5, 1.0]])
    sizes = [120, 100, 80]
    stds = [1.2, 1.0, 1.1]  # ~3.5-4.7 apart: blobs touch, a few points are ambiguous
    parts = [c + s * rng.standard_normal((m, d)) for c, m, s in zip(centers, sizes, stds)]
    x = rounded(np.concatenate(parts)[rng.permutation(sum(sizes))])
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x)
    # The optimum must be unique in practice: other seeds land on the same inertia.
    for seed in range(1, 6):
        other = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x).inertia_
        assert abs(other - km.inertia_) <= 1e-9 * km.inertia_, (seed, other, km.inertia_)
    return {"x": x, "k": k, "centers": km.cluster_centers_, "labels": km.labels_,
            "inertia": float(km.inertia_)}


def spectral_fixture():
    rng = np.random.default_rng(20240603)
    n, d, m = 150, 8, 10
    x = rng.standard_normal((n, d))
    outliers = np.sort(rng.choice(n, m, replace=False))
    shift = rng.standard_normal(d)
    x[outliers] += 6.0 * shift / np.linalg.norm(shift)
    x = rounded(x)
    xc = x - x.mean(axis=0)
    v = np.linalg.svd(xc, full_matrices=False)[2][0]
    v = v if v[np.argmax(np.abs(v))] > 0 else -v
    scores = (xc @ v) ** 2
    assert set(np.argsort(scores)[-m:]) == set(outliers), "outliers must be the top scores"
    return {"x": x, "top_direction": v, "scores": scores, "outliers": outliers}


def write_json(path, obj):
    """Compact JSON, one top-level key per line and one matrix row per line."""
    lines = []
    for key, val in obj.items():
        if isinstance(val, np.ndarray) and val.ndim == 2:
            body = "[\n" + ",\n".join("  " + json.dumps(r7(row)) for row in val) + "\n ]"
        else:
            body = json.dumps(r7(val) if not isinstance(val, int) else val)
        lines.append(f" {json.dumps(key)}: {body}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "testdata", "linalg"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name, build in [("pca", pca_fixture), ("kmeans", kmeans_fixture),
                        ("spectral", spectral_fixture)]:
        path = os.path.join(args.out, f"{name}.json")
        size = write_json(path, build())
        total += size
        print(f"wrote {os.path.relpath(path)} ({size} bytes)")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
