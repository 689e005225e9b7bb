"""A/B of ``fit_head`` between two checkouts: this one and a baseline (e.g. a worktree of an older commit).

Each (problem, checkout) pair runs in a fresh process that imports ``ntonnx`` from that checkout
only, the two interleaved per problem, so both see the same machine load; the problems are the
synthetic and real ones of ``benchmarks/solve.py`` (same data, weights, warm start and ridge).
Printed: the median wall seconds of the repeats, L-BFGS iterations, and each head's objective
scored by one float64 evaluator, with its relative gap to the lower of the two.

Run from the repository root::

    git worktree add /tmp/baseline <commit>
    python benchmarks/solve_ab.py --baseline /tmp/baseline
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (kind, n, dim, classes or real case, repeats): the issue's goals, N scaling, and two real heads.
PROBLEMS = (
    ("iid", 50_000, 2048, 2, 3),
    ("correlated", 50_000, 2048, 2, 1),
    ("correlated", 200_000, 2048, 2, 1),
    ("correlated", 50_000, 512, 10, 1),
    ("correlated", 10_000, 512, 2, 3),
    ("real", 0, 0, "shoes_scenes_ft_large/heldout_biased", 3),
    ("real", 0, 0, "fortunes_minilm/heldout_biased", 3),
)

# Runs in the child: ntonnx from the checkout given, the problem makers from this one's benchmarks/.
_CHILD = """
import json, sys, time, warnings
checkout, benchmarks, kind, n, dim, what, repeats = sys.argv[1:8]
sys.path.insert(0, checkout)
import ntonnx.method.solve as solver
assert solver.__file__.startswith(checkout), solver.__file__
sys.path.insert(1, benchmarks)
import numpy as np
import solve as problems
if kind == "real":
    problem = next(p for p in problems.real_problems() if p.kind == "real:" + what)
else:
    make = {"iid": problems.iid_problem, "correlated": problems.correlated_problem}[kind]
    problem = make(int(n), int(dim), int(what), 0)
seconds = []
for _ in range(int(repeats)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        fit = solver.fit_head(problem.X, problem.labels, n_logits=problem.n_logits, sample_weight=problem.weights,
                              init=problem.init, l2=problems.L2)
        seconds.append(time.perf_counter() - start)
print(json.dumps({"s": float(np.median(seconds)), "iterations": fit.n_iter, "converged": fit.converged,
                  "objective": problems.objective(problem, fit.W, fit.b)}))
"""


def run(checkout: Path, kind: str, n: int, dim: int, what, repeats: int) -> dict:
    args = [str(checkout.resolve()), str(ROOT / "benchmarks"), kind, str(n), str(dim), str(what), str(repeats)]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the code to compare against")
    parser.add_argument("--only", help="run only problems whose label contains this")
    args = parser.parse_args()
    print("| problem | baseline s | this s | ratio | iterations (baseline / this) | relative gap (baseline / this) |")
    print("|---|---:|---:|---:|---|---|")
    for kind, n, dim, what, repeats in PROBLEMS:
        label = what if kind == "real" else f"{kind} {n} x {dim} x {what}"
        if args.only and args.only not in label:
            continue
        base, this = run(args.baseline, kind, n, dim, what, repeats), run(ROOT, kind, n, dim, what, repeats)
        best = min(base["objective"], this["objective"])
        gaps = [f"{(r['objective'] - best) / best:.1e}" for r in (base, this)]
        print(
            f"| {label} (median of {repeats}) | {base['s']:.2f} | {this['s']:.2f} | {this['s'] / base['s']:.2f} | "
            f"{base['iterations']} / {this['iterations']} | {gaps[0]} / {gaps[1]} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
