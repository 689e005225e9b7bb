"""NeuronTune's identification on data with known core and spurious neurons.

The paper analyses a linear data model: the embedding holds *core* dimensions driven by the label
``y`` and *spurious* dimensions driven by an attribute ``a`` that agrees with ``y`` with
probability ``p`` in the training and identification data, plus pure-noise dimensions. An ERM
head trained on the biased data puts weight on both; NeuronTune should flag exactly the spurious
dimensions. Two versions of the model are checked:

``signed``  ``v = y_pm * mu_core * [core] + a_pm * mu_spu * [spurious] + noise`` with
            ``y_pm, a_pm`` in {-1, +1} (the paper's linear model);
``relu``    non-negative embeddings as after a ReLU: one block of neurons per class and one per
            attribute value, each firing ``relu(mu + noise)`` when its value is present and
            ``relu(noise)`` otherwise.

Reported: precision and recall of the selected set against the planted spurious dimensions, for
both selection rules and a few thresholds, and the worst-group accuracy of the ERM head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ntonnx import fit_head, select_spurious, spuriousness_scores
from ntonnx.method.metrics import compute_metrics, predict

#: (rule, threshold in units of the mean per-neuron standard deviation of the identification set)
SELECTIONS = (("all", 0.0), ("any", 0.0), ("any", 0.25), ("any", 1.0))


@dataclass(frozen=True)
class DataModel:
    kind: str  # "signed" or "relu"
    n_core: int = 8
    n_spurious: int = 8
    n_noise: int = 48
    mu_core: float = 0.6
    mu_spurious: float = 1.0
    agree: float = 0.95

    @property
    def dim(self) -> int:
        return self.n_core + self.n_spurious + self.n_noise

    @property
    def spurious(self) -> np.ndarray:
        return np.arange(self.n_core, self.n_core + self.n_spurious)

    def sample(self, n: int, agree: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Embeddings (n, dim), labels and attributes; ``a = y`` with probability ``agree``."""
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < agree, y, 1 - y)
        noise = rng.standard_normal((n, self.dim))
        v = noise.copy()
        core = slice(0, self.n_core)
        spu = slice(self.n_core, self.n_core + self.n_spurious)
        if self.kind == "signed":
            v[:, core] += (2 * y - 1)[:, None] * self.mu_core
            v[:, spu] += (2 * a - 1)[:, None] * self.mu_spurious
        else:
            half_c, half_s = self.n_core // 2, self.n_spurious // 2
            v[:, core] += self.mu_core * np.where(np.arange(self.n_core) < half_c, y[:, None] == 0, y[:, None] == 1)
            v[:, spu] += self.mu_spurious * np.where(
                np.arange(self.n_spurious) < half_s, a[:, None] == 0, a[:, None] == 1
            )
            v = np.maximum(v, 0.0)
        return v.astype(np.float32), y.astype(np.int64), a.astype(np.int64)


def run_once(model: DataModel, seed: int, n_train: int = 4000, n_ide: int = 2000) -> dict:
    """ERM head on biased data, then NeuronTune's selection on a biased identification set."""
    rng = np.random.default_rng(seed)
    x, y, _ = model.sample(n_train, model.agree, rng)
    erm = fit_head(x, y, n_logits=2, l2=1e-4)
    x_ide, y_ide, _ = model.sample(n_ide, model.agree, rng)
    x_test, y_test, a_test = model.sample(4000, 0.5, rng)
    scores = spuriousness_scores(x_ide, y_ide, predict(x_ide @ erm.W.T + erm.b), 2)
    truth = set(model.spurious.tolist())
    sigma = float(x_ide.std(axis=0).mean())
    out = {"erm_wga": compute_metrics(predict(x_test @ erm.W.T + erm.b), y_test, 2 * y_test + a_test).worst_group}
    for rule, scaled in SELECTIONS:
        chosen = set(select_spurious(scores, rule, scaled * sigma).tolist())
        hits = len(chosen & truth)
        out[(rule, scaled)] = {
            "selected": len(chosen),
            "precision": hits / len(chosen) if chosen else float("nan"),
            "recall": hits / len(truth),
        }
    return out


def table(seeds: list[int]) -> str:
    """Markdown table: precision/recall of the selected set per data model and rule (mean ± std)."""
    lines = [
        "| data model | ERM test WGA | rule, threshold | selected (of 8 spurious, 64 total) | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("signed", "relu"):
        model = DataModel(kind)
        runs = [run_once(model, seed) for seed in seeds]
        wga = _fmt([r["erm_wga"] for r in runs], percent=True)
        for key in SELECTIONS:
            sel = _fmt([r[key]["selected"] for r in runs])
            prec = _fmt([r[key]["precision"] for r in runs])
            rec = _fmt([r[key]["recall"] for r in runs])
            lines.append(f"| {kind} | {wga} | {key[0]}, λ={key[1]:g}σ | {sel} | {prec} | {rec} |")
    return "\n".join(lines)


def _fmt(values: list[float], percent: bool = False) -> str:
    arr = np.array(values, dtype=np.float64)
    if np.isnan(arr).all():
        return "n/a (nothing selected)"
    arr = arr[~np.isnan(arr)] * (100 if percent else 1)
    note = "" if len(arr) == len(values) else f" ({len(values) - len(arr)} runs selected nothing)"
    digits = 1 if percent else 2
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}{note}"
