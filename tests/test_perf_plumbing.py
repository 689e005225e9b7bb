"""What the fast paths of ``tune`` must keep: the same split, the same head, a clean error on NaN."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from builders import tiny_classifier, tiny_data

import ntonnx
from ntonnx.activations import n_label_classes
from ntonnx.data.dataset import ArrayDataset
from ntonnx.errors import ModelError
from ntonnx.graph.heads import locate_head
from ntonnx.graph.runtime import ModelRunner, extract_activations
from ntonnx.method.metrics import predict
from ntonnx.method.neurons import select_spurious, spuriousness_scores
from ntonnx.method.solve import class_balanced_weights, fit_head
from ntonnx.method.splits import stratified_split


@pytest.fixture
def model_and_data(tmp_path):
    model, params = tiny_classifier()
    onnx.save(model, tmp_path / "m.onnx")
    arrays = tiny_data(params, n=90)
    np.savez(tmp_path / "d.npz", **arrays)
    return tmp_path / "m.onnx", tmp_path / "d.npz", model, arrays


def _extract(model, arrays, order=None, batch_size=16):
    head = locate_head(model)
    runner = ModelRunner(model, [head.embedding, head.logits], ["CPUExecutionProvider"], "m.onnx")
    inputs = {k: v for k, v in arrays.items() if k not in ("labels", "groups")}
    data = ArrayDataset(inputs=inputs, labels=arrays["labels"], groups=arrays.get("groups"), source="d.npz")
    return extract_activations(runner, head, data, model_digest="-", batch_size=batch_size, order=order)


def test_extraction_in_a_given_order_puts_each_sample_in_its_row(model_and_data):
    _, _, model, arrays = model_and_data
    plain = _extract(model, arrays)
    order = np.random.default_rng(0).permutation(len(plain))
    ordered = _extract(model, arrays, order)
    np.testing.assert_array_equal(ordered.embeddings, plain.embeddings[order])
    np.testing.assert_array_equal(ordered.logits, plain.logits[order])
    np.testing.assert_array_equal(ordered.labels, plain.labels[order])


def test_tune_split_views_give_the_head_the_copies_gave(model_and_data):
    model_path, data_path, model, arrays = model_and_data
    result = ntonnx.tune(model_path, model_path.parent / "out.onnx", data=data_path)
    # the same pipeline done the plain way: extract in file order, split by copying
    acts = _extract(model, arrays)
    ide, tune = stratified_split(acts.labels, 0.5, 0)
    identification, tuning = acts.subset(ide), acts.subset(tune)
    assert (result.n_identification, result.n_tuning) == (len(identification), len(tuning))
    head = locate_head(model)
    scores = spuriousness_scores(
        identification.embeddings,
        identification.labels,
        predict(identification.logits),
        n_label_classes(head.n_classes),
    )
    suppressed = select_spurious(scores)
    assert result.suppressed == [int(i) for i in suppressed]
    original = ntonnx.graph.heads.read_head(model, head)
    fit = fit_head(tuning.embeddings, tuning.labels, n_logits=head.n_classes,
                   sample_weight=class_balanced_weights(tuning.labels), suppressed=suppressed, init=original,
                   fit_intercept=head.has_bias)  # fmt: skip
    written = ntonnx.graph.heads.read_head(onnx.load(model_path.parent / "out.onnx"), head)
    np.testing.assert_allclose(written[0], fit.W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written[1], fit.b, rtol=1e-5, atol=1e-6)


def test_tune_records_the_data_sha256(model_and_data):
    model_path, data_path, _, _ = model_and_data
    ntonnx.tune(model_path, model_path.parent / "out.onnx", data=data_path)
    props = {p.key: p.value for p in onnx.load(model_path.parent / "out.onnx").metadata_props}
    expected = hashlib.sha256(data_path.read_bytes()).hexdigest()
    assert json.loads(props["ntonnx.data_sha256"]) == {str(data_path): expected}


def test_nan_embeddings_are_a_model_error_naming_the_sample(model_and_data):
    _, _, model, arrays = model_and_data
    inputs = {k: v.copy() for k, v in arrays.items()}
    name = next(k for k in inputs if k not in ("labels", "groups"))
    inputs[name][7] = np.float32(3e38)  # finite input, overflows to Inf inside the model
    with pytest.raises(ModelError, match=r"NaN or Inf in .* sample 7 "):
        _extract(model, inputs)
