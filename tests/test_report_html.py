"""The HTML report and the figures, from a real ``tune`` on the shipped sample."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import sha256

import ntonnx
from ntonnx.report import main_figure, render_html, report_fields, write_html
from ntonnx.report.fields import MAX_MATRIX_CLASSES, confusion_fields, delta_fields

pytest.importorskip("matplotlib")

#: The sample's groups under the names a user would give them (group = 2 * shape class + colour).
GROUP_NAMES = {0: "digits 0-4, red", 1: "digits 0-4, green", 2: "digits 5-9, red", 3: "digits 5-9, green"}


def _tune_report(sample, tmp_path, method: str, rule: str = "all") -> dict:
    """A real tune's JSON report (evaluated on test.npz with groups as names), as saved and read back."""
    test = np.load(sample["test"])
    named = tmp_path / "test_named.npz"
    groups = np.array([GROUP_NAMES[g] for g in test["groups"]])
    np.savez(named, image=test["image"], labels=test["labels"], groups=groups)
    options = ntonnx.TuneOptions(method=method, rule=rule)
    result = ntonnx.tune(
        sample["model"], tmp_path / "tuned.onnx", data=sample["heldout"], eval_data=named, options=options
    )
    return json.loads(json.dumps(result.to_dict()))  # string keys, as a saved report reads back


@pytest.fixture(scope="module")
def report(sample, tmp_path_factory) -> dict:
    return _tune_report(sample, tmp_path_factory.mktemp("report"), "neurontune", rule="any")


class _Page(HTMLParser):
    """Collects what a browser would load and the number cells."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.cells: dict[str, tuple[str, str]] = {}
        self._cell: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "td" and "data-key" in attrs:
            self._cell = (attrs["data-key"], attrs["data-value"])

    def handle_data(self, data):
        if self._cell is not None:
            key, value = self._cell
            self.cells[key] = (value, data)
            self._cell = None


def test_html_report_shows_the_json_numbers_and_loads_nothing(report, sample, tmp_path):
    path = tmp_path / "report.html"
    write_html(report, path)
    page = path.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(page)
    # Self-contained: every image is an embedded PNG, nothing points outside the file.
    assert "http://" not in page and "https://" not in page
    assert parser.links == [] and "<script" not in page and "<link" not in page
    assert len(parser.sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in parser.sources)
    # Group names as given in the data, and every accuracy equal to the JSON report's.
    for name in GROUP_NAMES.values():
        assert name in page
    expected = {"accuracy", "worst_class", "worst_group"}
    for side in ("before", "after"):
        for key in expected:
            value, shown = parser.cells[f"{side}.{key}"]
            assert float(value) == report[side][key] and shown == f"{100 * report[side][key]:.1f}"
        for kind in ("per_group", "per_class"):
            for index, accuracy in report[side][kind].items():
                value, shown = parser.cells[f"{side}.{kind}.{index}"]
                assert float(value) == accuracy and shown == f"{100 * accuracy:.1f}"
    assert len([k for k in parser.cells if k.startswith("after.per_group.")]) == 4
    # What the method did: the suppressed neurons (rule any selects some on this sample) and provenance.
    assert report["n_suppressed"] > 0
    assert f"{report['n_suppressed']} neurons: {', '.join(map(str, report['suppressed'][:5]))}" in page
    assert report["provenance"]["model_sha256"] == sha256(sample["model"])
    assert sha256(sample["model"]) in page and f"ntonnx version</td><td>{ntonnx.__version__}" in page
    for path, digest in report["provenance"]["data_sha256"].items():
        assert digest == sha256(path) and digest in page


def test_report_fields_agree_with_the_metrics(report):
    """The confusion matrices the page draws hold the same counts as the accuracies in the report."""
    for side in ("before", "after"):
        matrix = np.array(report["confusion"][side])
        assert matrix.sum() == report[side]["n_samples"]
        assert np.trace(matrix) / matrix.sum() == pytest.approx(report[side]["accuracy"])
        for y, accuracy in report[side]["per_class"].items():
            row = matrix[int(y)]
            assert row[int(y)] / row.sum() == pytest.approx(accuracy)
    delta = report["delta"]
    assert delta["n_selected"] == report["n_suppressed"] == delta["n_above_any"]
    assert all(curve["selected_ranks"] for curve in delta["curves"])


def test_main_figure_is_a_png(report, tmp_path):
    from ntonnx.report import save_figure

    figure = main_figure(report)
    assert len(figure.axes) == 2
    path = tmp_path / "main.png"
    save_figure(figure, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_report_for_auto_lists_its_candidates(sample, tmp_path):
    report = _tune_report(sample, tmp_path, "auto")
    page = render_html(report)
    candidates = report["auto"]["candidates"]
    assert report["auto"]["selected"] == report["selected"] and len(candidates) >= 20
    assert candidates[0]["score"] == max(c["score"] for c in candidates)
    assert f"auto compared {len(candidates)} re-fits" in page and report["selected"] in page
    assert "http://" not in page and "https://" not in page


def test_html_report_for_erm_has_no_scores_and_no_change(sample, tmp_path):
    report = _tune_report(sample, tmp_path, "erm")
    assert report["delta"] is None and report["head_change"] is None and report["auto"] is None
    page = render_html(report)
    assert "No scores: method erm: it does not use them." in page and "No neuron was suppressed." in page


def test_fields_stay_small_for_1000_classes():
    rng = np.random.default_rng(0)
    n_classes, dim, n = 1000, 2048, 20000
    labels = rng.integers(0, n_classes, n)
    before = np.where(rng.random(n) < 0.7, labels, rng.integers(0, n_classes, n))
    after = np.where(rng.random(n) < 0.75, labels, rng.integers(0, n_classes, n))
    delta = rng.standard_normal((n_classes, dim))
    delta[::3] = np.nan
    fields = report_fields(
        labels=labels,
        before=before,
        after=after,
        n_classes=n_classes,
        delta=delta,
        n_wrong=rng.integers(0, 10, n_classes),
        n_right=rng.integers(1, 10, n_classes),
        suppressed=np.arange(0, dim, 2),
        original=(rng.standard_normal((n_classes, dim)), np.zeros(n_classes)),
        tuned=(rng.standard_normal((n_classes, dim)), np.zeros(n_classes)),
    )
    assert "before" not in fields["confusion"] and len(fields["confusion"]["top_before"]) == 20
    assert len(fields["delta"]["curves"]) == 8 and len(fields["delta"]["curves"][0]["values"]) <= 200
    assert len(json.dumps(fields)) < 300_000
    assert len(fields["notes"]) == 1 and "rule 'all': 334 of 1000 classes give no score" in fields["notes"][0]


def test_confusion_matrix_kept_whole_up_to_the_limit():
    labels = np.arange(MAX_MATRIX_CLASSES)
    fields = confusion_fields(labels, labels, np.roll(labels, 1), MAX_MATRIX_CLASSES)
    assert np.trace(np.array(fields["before"])) == MAX_MATRIX_CLASSES
    assert np.trace(np.array(fields["after"])) == 0


def test_delta_fields_note_classes_left_out_of_the_rule():
    delta = np.array([[0.5, -0.1, 0.2], [np.nan, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    wrong, right = np.array([3, 0, 0]), np.array([5, 9, 0])  # class 2 ("emu") has no identification samples
    fields = delta_fields(delta, wrong, right, [], "all", 0.0, ["cat", "dog", "emu"])
    assert fields["notes"] == [
        "rule 'all': 1 of 3 classes give no score (no mistakes: 1 (dog)), so no neuron is above the threshold "
        "for every class and none was selected; --rule any uses the 1 scored classes"
    ]
    fields = delta_fields(delta, wrong, right, [0, 2], "any", 0.0, ["cat", "dog", "emu"])
    assert fields["notes"] == [
        "1 of 3 classes give no score (no mistakes: 1 (dog)); rule 'any' used the 1 scored classes"
    ]
    curve = fields["curves"][0]
    assert curve["values"] == [0.5, 0.2, -0.1] and curve["selected_ranks"] == [0, 1]


def test_missing_matplotlib_names_the_extra(monkeypatch, report):
    import sys

    from ntonnx.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'ntonnx[report]'")):
        main_figure(report)
