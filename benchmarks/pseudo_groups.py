"""Where the label-free re-fit loses to DFR: the inferred groups, or the re-fit on them?

For every cached case (biased held-out data) this scores the pseudo-minority that ``pgdfr`` infers
(:func:`ntonnx.method.pseudo_groups.bias_model_groups`) against the true minority, then runs
``pgdfr``'s own re-fit (one bag, gate and guard off, the shape rule as in the product) on three
groupings of the same samples:

inferred          the pseudo-groups as ``pgdfr`` uses them
no false alarms   the same, with the flagged samples that are not true minority put back into
                  their class's majority (an oracle edit: precision 1, the same recall)
true groups       the true (class, attribute) groups

The gap between the first two rows is the price of the false alarms, between the last two the
price of the minority the bias model misses. Group labels are read here only to score; this is a
diagnostic, not a method. The true minority of a class is every sample outside its largest group.

Run from the repository root, after ``python -m sample_models.cases extract ...``::

    python benchmarks/pseudo_groups.py --cache /path/to/acts --seeds 3
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import DESIGN_CASES, RESULTS, case_arguments, case_names, load, score  # noqa: E402

from ntonnx.method.pgdfr import fit_pgdfr  # noqa: E402
from ntonnx.method.pseudo_groups import PseudoGroups, bias_model_groups  # noqa: E402

GROUPINGS = ("inferred", "no false alarms", "true groups")


def true_minority(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Samples outside the largest group of their class."""
    minority = np.zeros(len(labels), dtype=bool)
    for y in np.unique(labels):
        members = labels == y
        values, counts = np.unique(groups[members], return_counts=True)
        minority[members] = groups[members] != values[counts.argmax()]
    return minority


def refit_wga(heldout, test, head, groups: np.ndarray, n_classes: int, seed: int) -> float:
    """Test WGA of ``pgdfr``'s re-fit (one bag, no gate, no guard) on the given groups."""
    attribute = groups % n_classes
    pseudo = PseudoGroups(groups=groups, minority=attribute != heldout.labels, p_true=np.zeros(len(groups)))
    fit = fit_pgdfr(heldout.embeddings, heldout.labels, head, seed=seed, n_bags=1, pseudo=pseudo,
                    gate_margin=np.inf, confidence_gap=np.inf, guard=False)  # fmt: skip
    return score(fit.W, fit.b, test)[0]


def run_case(case: Path, seeds: list[int]) -> dict:
    head_npz = np.load(case / "head.npz")
    head = (head_npz["W"].astype(np.float64), head_npz["b"].astype(np.float64))
    n_classes = max(head[0].shape[0], 2)
    heldout, test = load(case, "heldout_biased"), load(case, "test")
    minority = true_minority(heldout.labels, heldout.groups)
    rows: dict[str, list] = {"flagged": [], "precision": [], "recall": [], **{g: [] for g in GROUPINGS}}
    for seed in seeds:
        pseudo = bias_model_groups(heldout.embeddings, heldout.labels, n_classes, seed=seed)
        flagged = pseudo.minority
        hits = int((flagged & minority).sum())
        rows["flagged"].append(int(flagged.sum()))
        rows["precision"].append(hits / max(int(flagged.sum()), 1))
        rows["recall"].append(hits / max(int(minority.sum()), 1))
        attribute = pseudo.groups % n_classes
        cleaned = np.where(flagged & ~minority, heldout.labels, attribute)
        for name, groups in (
            ("inferred", pseudo.groups),
            ("no false alarms", heldout.labels * n_classes + cleaned),
            ("true groups", heldout.groups),  # the case's (class, attribute) ids
        ):
            rows[name].append(refit_wga(heldout, test, head, groups, n_classes, seed))
    return {"n": len(heldout.labels), "dim": heldout.embeddings.shape[1], "minority": int(minority.sum()), **rows}


def report(results: dict[str, dict], seeds: list[int], seconds: float) -> str:
    lines = [
        "## Pseudo-groups: how good they are, and what each kind of error costs (biased held-out data)",
        "",
        f"`python benchmarks/pseudo_groups.py`, {len(seeds)} seeds, {seconds:.0f} s. Test worst-group accuracy (%) of "
        "`pgdfr`'s re-fit (one bag, gate and guard off, its shape rule) on the inferred pseudo-groups, on "
        "the same with the false alarms put back into their class's majority (oracle), and on the true "
        "groups. Precision and recall of the inferred pseudo-minority against the true minority (every "
        "sample outside its class's largest group). Group labels are read only to score.",
        "",
        "| case | n × dim | true minority | flagged | precision | recall | re-fit on inferred | no false alarms "
        "| true groups |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        design = " (design)" if name in DESIGN_CASES else ""
        lines.append(
            f"| {name}{design} | {r['n']} × {r['dim']} | {r['minority']} | {np.mean(r['flagged']):.0f} | "
            f"{np.mean(r['precision']):.2f} | {np.mean(r['recall']):.2f} | "
            + " | ".join(f"{100 * np.mean(r[g]):.1f}" for g in GROUPINGS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = case_arguments(__doc__.splitlines()[0], seeds=3).parse_args()
    names = case_names(args.cache, args.cases)
    seeds = list(range(args.seeds))
    warnings.simplefilter("ignore")
    start = time.time()
    results = {}
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = run_case(args.cache / name, seeds)
    text = report(results, seeds, time.time() - start)
    print(text)
    if not args.no_write:
        (RESULTS / "pseudo_groups.md").write_text(text)


if __name__ == "__main__":
    main()
