"""Label-free statistics that could tell ``pgdfr``'s guard when to keep the original head or ``llr`` (issue 13).

Why: ``pgdfr``'s guard (worst pseudo-group accuracy, re-fit vs original) never fired in 90 runs,
yet ``pgdfr`` ends below the original head on the text cases and below ``llr`` on others. This
script measures, on biased held-out data and without group labels, the candidate statistics a
better guard could use, next to the test worst-group accuracy (WGA, the only place group labels
are read) of the three heads such a guard chooses among:

=====================  ==================================================================
erm                    the original head
llr                    the class-balanced re-fit on every held-out sample (``pgdfr``'s own)
pgdfr                  :func:`ntonnx.method.pgdfr.fit_pgdfr`, guard off
=====================  ==================================================================

Label-free statistics, each on the held-out set, each sample predicted by a fit that did not see
it (``pgdfr``'s held-back halves, ``llr`` 5-fold): accuracy on the pseudo-minority and on the
pseudo-majority, the mean pseudo-group accuracy of original / pgdfr / llr, and the share of the
original head's mistakes inside the pseudo-minority. ``gain`` = mean pseudo-group accuracy of
pgdfr minus llr's, the candidate "check" (keep pgdfr only if every repeat's gain is positive).
``--synthetic`` runs the same gain on the planted linear model of ``tests/test_method_pgdfr.py``.

Run from the repository root::

    python benchmarks/guard_search.py --cache /work/cache/acts --seeds 3 > benchmarks/results/guard_search.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntonnx.method.metrics import predict  # noqa: E402
from ntonnx.method.pgdfr import LLR_L2, _cross_fitted_llr, fit_pgdfr  # noqa: E402
from ntonnx.method.pseudo_groups import bias_model_groups  # noqa: E402
from ntonnx.method.solve import class_balanced_weights, fit_head  # noqa: E402

CASES = (
    "cmnist",
    "colored_fashion",
    "cmnist_weak",
    "colored_fashion10",
    "fashion_scenes",
    "fashion_scenes_ft",
    "fortunes_minilm",
    "fortunes_weak",
    "shoes_scenes_ft",
)


def worst_group_accuracy(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    """Worst-group accuracy of the head ``(W (n_logits, dim), b)`` on ``x (N, dim)``; g: the true groups."""
    correct = predict(x @ W.T + b) == y
    return float(min(correct[g == k].mean() for k in np.unique(g)))


def _mean_group(correct: np.ndarray, groups: np.ndarray) -> float:
    return float(np.mean([correct[groups == k].mean() for k in np.unique(groups)]))


def statistics(x: np.ndarray, y: np.ndarray, head: tuple[np.ndarray, np.ndarray], seed: int) -> dict:
    """One seed's re-fits and label-free statistics on held-out ``x (N, dim)``, ``y (N,)``."""
    W0, b0 = head
    n_logits = W0.shape[0]
    pseudo = bias_model_groups(x, y, max(n_logits, 2), seed=seed)
    pg = fit_pgdfr(x, y, head, seed=seed, guard=False, pseudo=pseudo)
    llr = fit_head(x, y, n_logits=n_logits, sample_weight=class_balanced_weights(y), l2=LLR_L2, init=head)
    ok = {
        "original": predict(x @ W0.T + b0) == y,
        "pgdfr": pg.holdout_predictions == y,
        "llr": _cross_fitted_llr(x, y, head, True, seed) == y,
    }
    m = pseudo.minority
    return {
        "heads": {"erm": head, "llr": (llr.W, llr.b), "pgdfr": (pg.W, pg.b)},
        "minority": {k: float(v[m].mean()) if m.any() else float("nan") for k, v in ok.items()},
        "majority": {k: float(v[~m].mean()) for k, v in ok.items()},
        "mean_group": {k: _mean_group(v, pseudo.groups) for k, v in ok.items()},
        "errors_in_minority": float(m[~ok["original"]].mean()) if (~ok["original"]).any() else float("nan"),
        "branch": pg.branch,
    }


def cases_table(cache: Path, cases: list[str], seeds: list[int]) -> str:
    lines = [
        "| case | seed | erm | llr | pgdfr | pseudo-minority acc orig/pgdfr/llr | pseudo-majority acc "
        "orig/pgdfr/llr | mean pseudo-group acc orig/pgdfr/llr | orig errors in pseudo-minority | gain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        head_npz = np.load(cache / case / "head.npz")
        head = (head_npz["W"].astype(np.float64), head_npz["b"].astype(np.float64))
        held = np.load(cache / case / "heldout_biased.npz")
        test = np.load(cache / case / "test.npz")
        x, y = held["embeddings"], held["labels"].astype(np.int64)
        tx, ty, tg = test["embeddings"], test["labels"].astype(np.int64), test["groups"]
        for seed in seeds:
            s = statistics(x, y, head, seed)
            wga = {k: 100 * worst_group_accuracy(*h, tx, ty, tg) for k, h in s["heads"].items()}

            def three(key: str, s: dict = s) -> str:
                return "/".join(f"{100 * s[key][k]:.0f}" for k in ("original", "pgdfr", "llr"))

            gain = 100 * (s["mean_group"]["pgdfr"] - s["mean_group"]["llr"])
            lines.append(
                f"| {case} | {seed} | {wga['erm']:.1f} | {wga['llr']:.1f} | {wga['pgdfr']:.1f} | {three('minority')} "
                f"| {three('majority')} | {three('mean_group')} | {s['errors_in_minority']:.2f} | {gain:+.1f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines) + "\n"


def synthetic_table(seeds: list[int]) -> str:
    """The candidate check's gain on the planted model of the pgdfr tests (strong and weak shortcut)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_method_pgdfr import _planted, _wga

    lines = ["| agreement ρ | seed | erm | llr | pgdfr | gain |", "|---|---|---|---|---|---|"]
    for agree in (0.95, 0.8):
        for seed in seeds:
            rng = np.random.default_rng(seed)
            x, y, _ = _planted(4000, agree, rng)
            erm = fit_head(x, y, n_logits=1, l2=1e-4)
            xh, yh, _ = _planted(800, agree, rng)
            xt, yt, at = _planted(4000, 0.5, rng)
            s = statistics(xh, yh, (erm.W, erm.b), seed)
            wga = {k: 100 * _wga(*h, xt, yt, at) for k, h in s["heads"].items()}
            gain = 100 * (s["mean_group"]["pgdfr"] - s["mean_group"]["llr"])
            lines.append(
                f"| {agree} | {seed} | {wga['erm']:.1f} | {wga['llr']:.1f} | {wga['pgdfr']:.1f} | {gain:+.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "acts")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=8, help="seeds of the planted model (0: skip)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("## Label-free guard statistics, biased held-out data (test WGA %, statistics %)\n")
    print(cases_table(args.cache, args.cases, list(range(args.seeds))))
    if args.synthetic:
        print("## The candidate check's gain on the planted linear model (test WGA %)\n")
        print(synthetic_table(list(range(args.synthetic))))


if __name__ == "__main__":
    main()
