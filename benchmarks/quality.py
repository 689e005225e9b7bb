"""Quality benchmark: every method against DFR with group labels, on every case, biased and balanced held-out data.

Reads cached activations (``<cache>/<case>/{heldout_biased,heldout_balanced,test}.npz`` with
arrays embeddings, logits, labels, groups, plus ``head.npz`` with W, b and a ``READY`` file), and
for every case and both kinds of held-out data re-fits the head with every method over several
seeds, scoring test worst-group accuracy (WGA) and mean accuracy.

Methods (only ``dfr`` reads group labels; the seeds vary the identification/tuning split of the
paper's methods and the halves and subsamples of the DFR-style ones):

=====================  ==================================================================
erm                    the original head
llr                    class-balanced L2 re-fit on the tuning half (``ntonnx`` default l2)
neurontune             the paper: suppress ``delta > 0`` for all classes, then as llr
afr                    ``ntonnx``'s AFR on the tuning half
dfr (group labels)     :func:`ntonnx.method.dfr.fit_dfr` on the true groups, whole held-out set
pgdfr                  :func:`ntonnx.method.pgdfr.fit_pgdfr` (label-free, the proposal: weighted
                       re-fit with its ridge chosen on pseudo-groups, or DFR's subsampling when
                       n <= dim + 1; 3 bags averaged)
ablations              pgdfr without gate / guard, with one bag, as first built (DFR's subsampling on
                       one bag's pseudo-groups), DFR on (class, original model wrong)
=====================  ==================================================================

Run from the repository root::

    python -m sample_models.cases extract all --acts benchmarks/.cache/acts  # build cases, cache activations
    python benchmarks/quality.py                          # every READY case, 5 seeds -> results/quality.md
    python benchmarks/quality.py --cases cmnist --seeds 2 --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntonnx.activations import Activations  # noqa: E402
from ntonnx.method.base import FitInputs  # noqa: E402
from ntonnx.method.dfr import fit_dfr  # noqa: E402
from ntonnx.method.metrics import predict  # noqa: E402
from ntonnx.method.neurons import spuriousness_scores  # noqa: E402
from ntonnx.method.options import TuneOptions  # noqa: E402
from ntonnx.method.pgdfr import fit_pgdfr  # noqa: E402
from ntonnx.method.pseudo_groups import bias_model_groups  # noqa: E402
from ntonnx.method.registry import get_method  # noqa: E402
from ntonnx.method.splits import stratified_split  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache" / "acts"
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("heldout_biased", "heldout_balanced")
#: Cases the method's one configuration was designed on; every other case is held out. The first
#: version (subsampling) was designed on cmnist and colored_fashion; the weighted re-fit, its ridge
#: grid and the bagging were chosen looking at these four only.
DESIGN_CASES = ("cmnist", "colored_fashion", "fashion_scenes", "fortunes_minilm")
#: The label-free re-fit as first built (DFR's subsampling on one bag of pseudo-groups), for comparison.
FIRST_BUILT = "ablation: pgdfr as first built (DFR subsampling, one bag)"
ROWS = (
    "erm",
    "llr",
    "neurontune",
    "afr",
    "dfr (group labels)",
    "pgdfr (label-free)",
    "ablation: pgdfr, no gate",
    "ablation: pgdfr, no gate, no guard",
    "ablation: pgdfr, one bag",
    "ablation: pgdfr, weighted re-fit whatever the shape",
    FIRST_BUILT,
    "ablation: DFR on (class, original wrong)",
)


def load(case: Path, split: str) -> Activations:
    z = np.load(case / f"{split}.npz")
    return Activations(
        embeddings=z["embeddings"],
        logits=z["logits"],
        labels=z["labels"].astype(np.int64),
        groups=z["groups"].astype(np.int64),
        model_digest="",
        provider="cache",
    )


def score(W: np.ndarray, b: np.ndarray, test: Activations) -> tuple[float, float]:
    correct = predict(test.embeddings @ np.asarray(W).T + np.asarray(b)) == test.labels
    wga = min(correct[test.groups == g].mean() for g in np.unique(test.groups))
    return float(wga), float(correct.mean())


def paper_method(name: str, heldout: Activations, head: tuple[np.ndarray, np.ndarray], seed: int):
    """llr / neurontune / afr as ``ntonnx tune`` runs them on one held-out file (split, scores, re-fit)."""
    options = TuneOptions(method=name, seed=seed)
    method = get_method(name)
    ide_idx, tune_idx = stratified_split(heldout.labels, options.split, seed)
    identification, tuning = heldout.subset(ide_idx), heldout.subset(tune_idx)
    scores = None
    if method.needs_identification:
        n_classes = max(head[0].shape[0], 2)
        scores = spuriousness_scores(
            identification.embeddings, identification.labels, predict(identification.logits), n_classes
        )
    inputs = FitInputs(
        tuning=tuning,
        identification=identification if method.needs_identification else None,
        scores=scores,
        original=head,
        fit_intercept=True,
        options=options,
    )
    fit = method.fit(inputs)
    return fit.W, fit.b


def run_kind(heldout: Activations, test: Activations, head, seeds: list[int]) -> dict:
    """Row -> list over seeds of (wga, acc); plus pgdfr's decisions."""
    out: dict[str, list] = {row: [] for row in ROWS}
    decisions = []
    erm = score(*head, test)
    n_logits = head[0].shape[0]
    wrong = predict(heldout.logits) != heldout.labels
    for seed in seeds:
        out["erm"].append(erm)
        for method in ("llr", "neurontune", "afr"):
            out[method].append(score(*paper_method(method, heldout, head, seed), test))
        dfr = fit_dfr(heldout.embeddings, heldout.labels, heldout.groups, n_logits=n_logits, seed=seed)
        out["dfr (group labels)"].append(score(dfr.W, dfr.b, test))
        pseudo = bias_model_groups(heldout.embeddings, heldout.labels, max(n_logits, 2), seed=seed)
        pg = fit_pgdfr(heldout.embeddings, heldout.labels, head, seed=seed, pseudo=pseudo)
        out["pgdfr (label-free)"].append(score(pg.W, pg.b, test))
        decisions.append(
            {
                "branch": pg.branch,
                "kept_original": pg.kept_original,
                "gate": [pg.gate_original, pg.gate_refit],
                "confidence_gap": pg.confidence_gap,
                "guard": [pg.guard_refit, pg.guard_original],
                "l2": pg.l2,
                "minority": pg.minority_counts.tolist(),
            }
        )
        # without the gate: the same pseudo-group re-fit (same seed) unless the gate opened
        raw = pg if pg.branch != "class-balanced" and not pg.kept_original else None
        if raw is None:
            raw = fit_pgdfr(
                heldout.embeddings,
                heldout.labels,
                head,
                seed=seed,
                gate_margin=np.inf,
                confidence_gap=np.inf,
                guard=False,
                pseudo=pseudo,
            )
        guarded = head if raw.guard_refit < raw.guard_original else (raw.W, raw.b)
        out["ablation: pgdfr, no gate"].append(score(*guarded, test))
        out["ablation: pgdfr, no gate, no guard"].append(score(raw.W, raw.b, test))
        one = fit_pgdfr(heldout.embeddings, heldout.labels, head, seed=seed, n_bags=1, pseudo=pseudo)
        out["ablation: pgdfr, one bag"].append(score(one.W, one.b, test))
        weighted = pg
        if pg.branch == "pseudo-group dfr":  # the shape chose subsampling: the weighted form for comparison
            weighted = fit_pgdfr(heldout.embeddings, heldout.labels, head, seed=seed, refit="weighted", pseudo=pseudo)
        out["ablation: pgdfr, weighted re-fit whatever the shape"].append(score(weighted.W, weighted.b, test))
        first = fit_pgdfr(
            heldout.embeddings, heldout.labels, head, seed=seed, refit="subsample", n_bags=1, pseudo=pseudo
        )
        out[FIRST_BUILT].append(score(first.W, first.b, test))
        decisions[-1]["first_built"] = "kept original" if first.kept_original else first.branch
        err = fit_dfr(heldout.embeddings, heldout.labels, 2 * heldout.labels + wrong, n_logits=n_logits, seed=seed)
        out["ablation: DFR on (class, original wrong)"].append(score(err.W, err.b, test))
    return {"scores": out, "decisions": decisions}


def run_case(case: Path, seeds: list[int]) -> dict:
    head_npz = np.load(case / "head.npz")
    head = (head_npz["W"].astype(np.float64), head_npz["b"].astype(np.float64))
    test = load(case, "test")
    info = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    result = {"info": info, "kinds": {}}
    for kind in KINDS:
        start = time.time()
        result["kinds"][kind] = run_kind(load(case, kind), test, head, seeds)
        result["kinds"][kind]["seconds"] = time.time() - start
    return result


def fmt(values: list[tuple[float, float]]) -> tuple[str, str]:
    arr = np.array(values) * 100
    return f"{arr[:, 0].mean():.1f} ± {arr[:, 0].std():.1f}", f"{arr[:, 1].mean():.1f}"


def decision_text(decisions: list[dict]) -> str:
    branches = {}
    for d in decisions:
        key = "kept original" if d["kept_original"] else d["branch"]
        branches[key] = branches.get(key, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in sorted(branches.items()))


def synthetic_neurons(seeds: list[int]) -> str:
    """Item 4: precision/recall of the planted spurious neurons for the paper's rule and the logit rule."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic import DataModel

    from ntonnx.method.neurons import select_logit, select_spurious
    from ntonnx.method.pseudo_groups import bias_model_groups
    from ntonnx.method.solve import fit_head

    rows = [
        "| data model | head | rule (scores from) | selected | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("signed", "relu"):
        model = DataModel(kind)
        truth = set(model.spurious.tolist())
        for n_logits in (1, 2):
            found: dict[str, list] = {}
            for seed in seeds:
                rng = np.random.default_rng(seed)
                x, y, _ = model.sample(4000, model.agree, rng)
                erm = fit_head(x, y, n_logits=n_logits, l2=1e-4)
                xi, yi, _ = model.sample(2000, model.agree, rng)
                mistakes = spuriousness_scores(xi, yi, predict(xi @ erm.W.T + erm.b), 2)
                pseudo = spuriousness_scores(xi, yi, bias_model_groups(xi, yi, 2).groups % 2, 2)
                for name, chosen in (
                    ("all, λ=0 (model's mistakes; the paper)", select_spurious(mistakes, "all")),
                    ("logit, 3 s.e. (model's mistakes)", select_logit(mistakes, erm.W)),
                    ("logit, 3 s.e. (bias-model pseudo-minority)", select_logit(pseudo, erm.W)),
                ):
                    chosen = set(chosen.tolist())
                    hits = len(chosen & truth)
                    found.setdefault(name, []).append((len(chosen), hits / max(len(chosen), 1), hits / len(truth)))
            for name, values in found.items():
                arr = np.array(values)
                mean, std = arr.mean(axis=0), arr.std(axis=0)
                rows.append(
                    f"| {kind} | {n_logits} logit{'s' if n_logits > 1 else ''} | {name} | {mean[0]:.1f} "
                    f"| {mean[1]:.2f} ± {std[1]:.2f} | {mean[2]:.2f} ± {std[2]:.2f} |"
                )
    return "\n".join(rows)


def report(results: dict[str, dict], seeds: list[int], seconds: float) -> str:
    lines = [
        "## Label-free re-fits vs DFR with group labels (issue 13)",
        "",
        f"Test worst-group accuracy (WGA, mean ± std over {len(seeds)} seeds) and mean accuracy, %. "
        "Only `dfr (group labels)` reads group labels (fitting *and* choosing C); every other row is label-free. "
        "Seeds vary the identification/tuning split (llr, neurontune, afr) or the halves and subsamples "
        "(the DFR-style rows). Design cases (the one configuration was chosen looking at these): "
        f"{', '.join(DESIGN_CASES)}; all other cases are held out, except for one rule: `pgdfr` subsamples "
        "instead of weighting when samples <= dimensions + 1, a rule chosen after every case had been seen "
        "(see `quality_notes.md`).",
        "",
    ]
    summary = [
        "| case | design? | biased: DFR | biased: pgdfr | goal ≥ DFR−3 | biased: pgdfr as first built "
        "| balanced: llr | balanced: pgdfr | goal ≥ llr−1 | erm | never below erm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, list[float]] = {}
    for name, res in results.items():
        info = res["info"]
        lines += [f"### {name}{' (design case)' if name in DESIGN_CASES else ' (held out)'}", ""]
        if info.get("task"):
            lines += [f"{info['task']}. Backbone: {info.get('backbone', '?')}.", ""]
        lines += [
            "| method | biased: test WGA | mean acc | balanced: test WGA | mean acc |",
            "|---|---|---|---|---|",
        ]
        for row in ROWS:
            cells = []
            for kind in KINDS:
                cells += fmt(res["kinds"][kind]["scores"][row])
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
        for kind in KINDS:
            dec = res["kinds"][kind]["decisions"]
            d0 = dec[0]
            lines.append(
                f"- {kind}: pgdfr took {decision_text(dec)}; gate (balanced acc original vs cross-fitted llr) "
                f"{d0['gate'][0]:.3f} vs {d0['gate'][1]:.3f}, original's confidence − accuracy "
                f"{d0['confidence_gap']:+.3f}; guard (re-fit vs original) "
                f"{np.mean([d['guard'][0] for d in dec]):.3f} vs {np.mean([d['guard'][1] for d in dec]):.3f}; "
                f"pseudo-minority per class (first bag) {d0['minority']}; ridges chosen "
                f"{sorted({v for d in dec for v in d['l2'] if v == v})}; "
                f"{res['kinds'][kind]['seconds']:.0f} s for all rows"
            )
        lines.append("")
        scores = res["kinds"]
        wga = {(k, row): np.mean([v[0] for v in scores[k]["scores"][row]]) * 100 for k in KINDS for row in ROWS}
        erm = wga[("heldout_biased", "erm")]
        pb, pbal = wga[("heldout_biased", "pgdfr (label-free)")], wga[("heldout_balanced", "pgdfr (label-free)")]
        dfr, llr = wga[("heldout_biased", "dfr (group labels)")], wga[("heldout_balanced", "llr")]
        first = wga[("heldout_biased", FIRST_BUILT)]
        for column, value in (
            ("dfr", dfr),
            ("pgdfr", pb),
            ("first", first),
            ("llr", llr),
            ("pbal", pbal),
            ("erm", erm),
        ):
            means.setdefault(column, []).append(value)
        summary.append(
            f"| {name} | {'yes' if name in DESIGN_CASES else 'no'} | {dfr:.1f} | {pb:.1f} | "
            f"{'met' if pb >= dfr - 3 else f'missed by {dfr - 3 - pb:.1f}'} | {first:.1f} | {llr:.1f} | {pbal:.1f} | "
            f"{'met' if pbal >= llr - 1 else f'missed by {llr - 1 - pbal:.1f}'} | {erm:.1f} | "
            f"{'yes' if min(pb, pbal) >= erm else 'no'} |"
        )
    m = {column: float(np.mean(values)) for column, values in means.items()}
    summary.append(
        f"| mean of the cases | | {m['dfr']:.1f} | {m['pgdfr']:.1f} | | {m['first']:.1f} | {m['llr']:.1f} "
        f"| {m['pbal']:.1f} | | {m['erm']:.1f} | |"
    )
    lines += ["### Goal per case (mean test WGA)", "", *summary, ""]
    runs = {k: [d for r in results.values() for d in r["kinds"][k]["decisions"]] for k in KINDS}
    kept = {k: sum(d["kept_original"] for d in v) for k, v in runs.items()}
    gated = {k: sum(d["branch"] == "class-balanced" for d in v) for k, v in runs.items()}
    lines += [
        f"Gate: opened (class-balanced re-fit) in {gated['heldout_biased']} of {len(runs['heldout_biased'])} runs on "
        f"biased and {gated['heldout_balanced']} of {len(runs['heldout_balanced'])} on balanced held-out data. "
        f"Guard: kept the original head in {kept['heldout_biased']} of {len(runs['heldout_biased'])} runs on biased "
        f"and {kept['heldout_balanced']} of {len(runs['heldout_balanced'])} on balanced held-out data (its false-alarm "
        "count where the re-fit beats the original: compare the erm and pgdfr rows above).",
        "",
    ]
    lines += [
        "### Per-class neuron scores (issue item 4), synthetic data model of `benchmarks/synthetic.py`",
        "",
        "Planted: 8 spurious of 64 neurons; precision 0 where nothing correct was selected.",
        "",
        synthetic_neurons(seeds),
        "",
    ]
    lines.append(f"_Measured by `python benchmarks/quality.py`: {seconds:.0f} s of fitting, all cases and seeds._")
    return "\n".join(lines) + "\n"


def case_arguments(description: str, seeds: int) -> argparse.ArgumentParser:
    """The options every benchmark over the cached cases takes (--cache, --cases, --seeds, --no-write)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--cases", nargs="*", help="case names (default: every READY case)")
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--no-write", action="store_true", help="print the table, do not write results/")
    return parser


def case_names(cache: Path, cases: list[str] | None) -> list[str]:
    """``cases``, or every READY case under ``cache``: design cases first, then the rest by name."""
    names = list(cases) if cases else sorted(p.parent.name for p in cache.glob("*/READY"))
    order = {n: i for i, n in enumerate(DESIGN_CASES)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def main() -> None:
    parser = case_arguments(__doc__.splitlines()[0], seeds=5)
    parser.add_argument(
        "--store",
        type=Path,
        default=ROOT / "benchmarks" / ".cache" / "quality",
        help="per-case results, reused unless --rerun",
    )
    parser.add_argument("--rerun", action="store_true", help="recompute cases already in --store")
    args = parser.parse_args()
    names = case_names(args.cache, args.cases)
    seeds = list(range(args.seeds))
    start = time.time()
    results = {}
    warnings.simplefilter("ignore")
    args.store.mkdir(parents=True, exist_ok=True)
    for name in names:
        stored = args.store / f"{name}-{len(seeds)}seeds.json"
        if stored.exists() and not args.rerun:
            results[name] = json.loads(stored.read_text())
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = run_case(args.cache / name, seeds)
        stored.write_text(json.dumps(results[name], default=float))
    # cases read back from --store count with the time they took when they ran
    fitted = sum(kind["seconds"] for res in results.values() for kind in res["kinds"].values())
    text = report(results, seeds, max(fitted, time.time() - start))
    print(text)
    if not args.no_write:
        (RESULTS / "quality.md").write_text(text)
        (RESULTS / "quality.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
