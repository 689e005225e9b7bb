"""Real exporters' graphs: detect, tune, and rewrite round trip on each.

Models come from torch's TorchScript exporter and its default (dynamo) exporter (shipped files made
by ``fixtures/exporters/make_torch_fixtures.py``), and are exported at test time (once per session)
by skl2onnx and onnxruntime's quantizers; plus hand-built graphs reproducing tf2onnx's
Keras Dense and PaddlePaddle's Constant-weight patterns. For each: ``inspect`` must find the
expected node, ``tune`` must succeed and leave the input files untouched, and a rewrite with
random ``(W, b)`` must make the model output ``v @ W.T + b`` (then the post-ops) as NumPy computes
it, with every output that does not depend on the head bit-identical to the input model's.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ntonnx
from ntonnx.data.dataset import ArrayDataset
from ntonnx.graph.heads import locate_head, read_head
from ntonnx.graph.model_io import load_model
from ntonnx.graph.rewrite import tuned_model
from ntonnx.method.metrics import predict
from tests.test_heads import numpy_post_ops, relative_error


@dataclass
class Fixture:
    """An exported model and what ntonnx must find in it."""

    path: Path
    pattern: str
    nodes: list[str]
    post_ops: list[str]
    inputs: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
    output: str | None = None
    unchanged: list[str] = field(default_factory=list)
    external: bool = False
    batch: int | None = None  # the input's fixed batch size, if any


def images(shape=(3, 8, 8), name="x"):
    return lambda rng, n: {name: rng.normal(size=(n, *shape)).astype(np.float32)}


def tokens(vocab=20, length=5, name="x"):
    return lambda rng, n: {name: rng.integers(0, vocab, size=(n, length)).astype(np.int64)}


def features(width, name):
    return lambda rng, n: {name: rng.normal(size=(n, width)).astype(np.float32)}


# ----------------------------------------------------------------------- torch (shipped files)

SHIPPED = Path(__file__).resolve().parent / "fixtures" / "exporters"


def shipped(name: str, root: Path) -> Path:
    """Copy a torch export made by ``fixtures/exporters/make_torch_fixtures.py`` (and its data file).

    Shipped rather than exported at test time so that CI checks real torch graphs without torch.
    """
    for source in SHIPPED.glob(f"{name}.onnx*"):
        shutil.copyfile(source, root / source.name)
    return root / f"{name}.onnx"


# ------------------------------------------------------------------------------------- skl2onnx


def skl_mlp(path: Path, n_classes: int, zipmap: bool) -> Path:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (n_classes > 2) * (X[:, 1] > 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(X, y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": zipmap}}, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return path


def skl_linear(path: Path, estimator: str, n_classes: int, *, scaler: bool, zipmap: bool | None) -> Path:
    """skl2onnx's export of a LogisticRegression or LinearSVC (after a StandardScaler in a Pipeline).

    Both end in an ``ai.onnx.ml`` ``LinearClassifier`` whose weights are node attributes; LinearSVC
    has no ZipMap option (``zipmap=None``).
    """
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(160, 5)) * [1, 2, 3, 4, 5] + 1).astype(np.float32)
    y = (X[:, 0] > 1).astype(int) + (n_classes > 2) * (X[:, 1] > 1.5)
    classifier = LogisticRegression(max_iter=500) if estimator == "logreg" else LinearSVC(max_iter=5000)
    model = make_pipeline(StandardScaler(), classifier) if scaler else classifier
    model.fit(X, y)
    # LinearSVC's default option named explicitly: skl2onnx otherwise gives it a Pipeline's zipmap option and fails
    options = {id(classifier): {"zipmap": zipmap} if zipmap is not None else {"output_class_labels": False}}
    onx = to_onnx(model, X[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(onx.SerializeToString())
    return path


# ---------------------------------------------------------------------------------- hand-built


def tf2onnx_dense(path: Path) -> Path:
    """What tf2onnx emits for keras Sequential([Dense(8, relu), Dense(3, softmax)])."""
    h = onnx.helper
    rng = np.random.default_rng(0)

    def init(name, shape):
        return onnx.numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = [
        h.make_node(
            "MatMul", ["input_1", "sequential/dense/MatMul/ReadVariableOp:0"], ["d0"], name="sequential/dense/MatMul"
        ),
        h.make_node(
            "Add", ["d0", "sequential/dense/BiasAdd/ReadVariableOp:0"], ["d1"], name="sequential/dense/BiasAdd"
        ),
        h.make_node("Relu", ["d1"], ["d2"], name="sequential/dense/Relu"),
        h.make_node(
            "MatMul", ["d2", "sequential/dense_1/MatMul/ReadVariableOp:0"], ["d3"], name="sequential/dense_1/MatMul"
        ),
        h.make_node(
            "Add", ["d3", "sequential/dense_1/BiasAdd/ReadVariableOp:0"], ["d4"], name="sequential/dense_1/BiasAdd"
        ),
        h.make_node("Softmax", ["d4"], ["dense_1"], name="sequential/dense_1/Softmax", axis=-1),
    ]
    graph = h.make_graph(
        nodes,
        "tf2onnx",
        [h.make_tensor_value_info("input_1", onnx.TensorProto.FLOAT, ["unk__6", 4])],
        [h.make_tensor_value_info("dense_1", onnx.TensorProto.FLOAT, ["unk__7", 3])],
        [
            init("sequential/dense/MatMul/ReadVariableOp:0", (4, 8)),
            init("sequential/dense/BiasAdd/ReadVariableOp:0", (8,)),
            init("sequential/dense_1/MatMul/ReadVariableOp:0", (8, 3)),
            init("sequential/dense_1/BiasAdd/ReadVariableOp:0", (3,)),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], producer_name="tf2onnx")
    model.producer_version = "1.16.1 15c810"
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def paddle_constants(path: Path) -> Path:
    """PaddlePaddle's pattern: weights in Constant nodes, matmul_v2 + elementwise_add, softmax, scale."""
    h = onnx.helper
    rng = np.random.default_rng(0)

    def const(name, shape):
        value = onnx.numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        return h.make_node("Constant", [], [name], name=f"Constant_{name}", value=value)

    nodes = [
        const("linear_0.w_0", (4, 8)),
        const("linear_0.b_0", (8,)),
        const("linear_1.w_0", (8, 3)),
        const("linear_1.b_0", (3,)),
        h.make_node("MatMul", ["x", "linear_0.w_0"], ["linear_0.tmp_0"], name="p2o.MatMul.0"),
        h.make_node("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"], name="p2o.Add.0"),
        h.make_node("Relu", ["linear_0.tmp_1"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
        h.make_node("MatMul", ["relu_0.tmp_0", "linear_1.w_0"], ["linear_1.tmp_0"], name="p2o.MatMul.1"),
        h.make_node("Add", ["linear_1.tmp_0", "linear_1.b_0"], ["linear_1.tmp_1"], name="p2o.Add.1"),
        h.make_node("Softmax", ["linear_1.tmp_1"], ["softmax_0.tmp_0"], name="p2o.Softmax.0", axis=1),
        h.make_node("Identity", ["softmax_0.tmp_0"], ["save_infer_model/scale_0.tmp_0"], name="p2o.Identity.0"),
    ]
    graph = h.make_graph(
        nodes,
        "paddle",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["p2o.DynamicDimension.0", 4])],
        [
            h.make_tensor_value_info(
                "save_infer_model/scale_0.tmp_0", onnx.TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3]
            )
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 11)], producer_name="PaddlePaddle")
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------ onnxruntime quantizers


def ort_dynamic(source: Path, path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    return path


def ort_qdq(source: Path, path: Path, make_inputs) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([make_inputs(rng, 4) for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8)
    return path


# ------------------------------------------------------------------------------------ registry

FIXTURES = [
    "torch_ts_cnn",
    "torch_ts_cnn_batch1_softmax",
    "torch_dynamo_cnn",
    "torch_ts_conv1x1",
    "torch_dynamo_conv1x1",
    "torch_ts_tokens",
    "torch_dynamo_tokens",
    "torch_ts_binary",
    "torch_ts_two_heads",
    "skl_mlp_zipmap",
    "skl_mlp_nozipmap",
    "skl_mlp_binary",
    "skl_logreg_binary_zipmap",
    "skl_logreg_multi",
    "skl_scaler_logreg_multi_zipmap",
    "skl_linearsvc_binary",
    "skl_scaler_linearsvc_multi",
    "tf2onnx_keras_dense",
    "paddle_constant_weights",
    "ort_dynamic_quant",
    "ort_qdq_static",
]


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Fixture]:
    root = tmp_path_factory.mktemp("exported")
    ts_cnn = shipped("ts_cnn", root)
    fixtures = {
        "torch_ts_cnn": Fixture(ts_cnn, "gemm", ["/fc/Gemm"], [], images()),
        "torch_ts_cnn_batch1_softmax": Fixture(
            shipped("ts_cnn_b1", root),
            "gemm",
            ["/fc/Gemm"],
            ["Softmax"],
            images(),
            batch=1,
        ),
        "torch_dynamo_cnn": Fixture(
            shipped("dynamo_cnn", root),
            "gemm",
            ["node_linear"],
            [],
            images(),
            external=True,
        ),
        "torch_ts_conv1x1": Fixture(
            shipped("ts_conv", root),
            "conv1x1",
            ["/classifier/Conv", "/pool/GlobalAveragePool"],
            ["Flatten"],
            images(),
        ),
        "torch_dynamo_conv1x1": Fixture(
            shipped("dynamo_conv", root),
            "conv1x1",
            ["node_conv2d_1", "node_mean"],
            ["Reshape"],
            images(),
            external=True,
        ),
        "torch_ts_tokens": Fixture(
            shipped("ts_tokens", root),
            "matmul_add",
            ["/classifier/MatMul", "/classifier/Add", "/Gather"],
            [],
            tokens(),
        ),
        "torch_dynamo_tokens": Fixture(
            shipped("dynamo_tokens", root),
            "matmul_add",
            ["node_MatMul_3", "node_linear_1", "node_select"],
            [],
            tokens(),
            external=True,
        ),
        "torch_ts_binary": Fixture(
            shipped("ts_binary", root),
            "gemm",
            ["/fc/Gemm"],
            ["Sigmoid"],
            features(6, "x"),
        ),
        "torch_ts_two_heads": Fixture(
            shipped("ts_two", root),
            "gemm",
            ["/fc/Gemm"],
            [],
            features(6, "x"),
            output="logits",
            unchanged=["aux"],
        ),
        "skl_mlp_zipmap": Fixture(
            skl_mlp(root / "mlp_zipmap.onnx", 3, zipmap=True),
            "matmul_add",
            ["MatMul1", "Add1"],
            ["Softmax", "ZipMap"],
            features(5, "X"),
        ),
        "skl_mlp_nozipmap": Fixture(
            skl_mlp(root / "mlp.onnx", 3, zipmap=False),
            "matmul_add",
            ["MatMul1", "Add1"],
            ["Softmax", "Identity"],
            features(5, "X"),
        ),
        "skl_mlp_binary": Fixture(
            skl_mlp(root / "mlp_binary.onnx", 2, zipmap=False),
            "matmul_add",
            ["MatMul1", "Add1"],
            ["Sigmoid", "BinaryProba"],
            features(5, "X"),
        ),
        "skl_logreg_binary_zipmap": Fixture(
            skl_linear(root / "logreg_binary.onnx", "logreg", 2, scaler=False, zipmap=True),
            "linear_classifier",
            ["LinearClassifier"],
            ["ZipMap"],
            features(5, "X"),
        ),
        "skl_logreg_multi": Fixture(
            skl_linear(root / "logreg.onnx", "logreg", 3, scaler=False, zipmap=False),
            "linear_classifier",
            ["LinearClassifier"],
            ["NormalizeL1"],
            features(5, "X"),
        ),
        "skl_scaler_logreg_multi_zipmap": Fixture(
            skl_linear(root / "scaler_logreg.onnx", "logreg", 3, scaler=True, zipmap=True),
            "linear_classifier",
            ["LinearClassifier"],
            ["NormalizeL1", "ZipMap"],
            features(5, "X"),
        ),
        "skl_linearsvc_binary": Fixture(
            skl_linear(root / "linearsvc_binary.onnx", "linearsvc", 2, scaler=False, zipmap=None),
            "linear_classifier",
            ["LinearClassifier"],
            ["PositiveColumn"],
            features(5, "X"),
        ),
        "skl_scaler_linearsvc_multi": Fixture(
            skl_linear(root / "scaler_linearsvc.onnx", "linearsvc", 3, scaler=True, zipmap=None),
            "linear_classifier",
            ["LinearClassifier"],
            [],
            features(5, "X"),
        ),
        "tf2onnx_keras_dense": Fixture(
            tf2onnx_dense(root / "keras.onnx"),
            "matmul_add",
            ["sequential/dense_1/MatMul", "sequential/dense_1/BiasAdd"],
            ["Softmax"],
            features(4, "input_1"),
        ),
        "paddle_constant_weights": Fixture(
            paddle_constants(root / "paddle.onnx"),
            "matmul_add",
            ["p2o.MatMul.1", "p2o.Add.1"],
            ["Softmax", "Identity"],
            features(4, "x"),
        ),
        "ort_dynamic_quant": Fixture(
            ort_dynamic(ts_cnn, root / "cnn_dynamic.onnx"),
            "matmul_integer",
            [
                "/Flatten_output_0_QuantizeLinear",
                "/fc/Gemm_MatMul_quant",
                "logits_MatMul_output_quantized_cast",
                "/fc/Gemm_MatMul_quant_output_scale_mul",
                "/fc/Gemm_Add",
            ],
            [],
            images(),
        ),
        "ort_qdq_static": Fixture(
            ort_qdq(ts_cnn, root / "cnn_qdq.onnx", images()),
            "gemm",
            ["/fc/Gemm"],
            ["QuantizeDequantize"],
            images(),
        ),
    }
    assert sorted(fixtures) == sorted(FIXTURES)
    return fixtures


@pytest.fixture(params=FIXTURES)
def fixture(request, exported) -> Fixture:
    return exported[request.param]


def file_hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.parent.glob(path.name + "*"))}


def labelled(fixture: Fixture, output: str | None = None, n: int = 96, seed: int = 0) -> ArrayDataset:
    """Random inputs labelled by the model itself, with a third of the labels changed (mistakes)."""
    rng = np.random.default_rng(seed)
    inputs = fixture.inputs(rng, n)
    unlabelled = ArrayDataset(inputs=inputs, labels=np.zeros(n, np.int64), groups=None, source="random")
    acts = ntonnx.extract(fixture.path, unlabelled, head=ntonnx.HeadQuery(output=output or fixture.output))
    labels = predict(acts.logits)
    flip = rng.random(n) < 1 / 3
    labels[flip] = rng.integers(0, max(acts.logits.shape[1], 2), flip.sum())
    return ArrayDataset(inputs=inputs, labels=labels, groups=None, source="random")


def test_inspect_finds_the_head(fixture):
    info = ntonnx.inspect_model(fixture.path, head=ntonnx.HeadQuery(output=fixture.output))
    assert info.head_error is None
    assert (info.head.pattern, info.head.nodes, info.head.post_ops) == (
        fixture.pattern,
        fixture.nodes,
        fixture.post_ops,
    )


def test_tune_writes_a_verified_model_in_the_same_layout(fixture, tmp_path):
    before = file_hashes(fixture.path)
    out = tmp_path / "tuned.onnx"
    result = ntonnx.tune(fixture.path, out, data=labelled(fixture), head=ntonnx.HeadQuery(output=fixture.output))
    assert file_hashes(fixture.path) == before  # input model and its data file untouched
    expected_files = [out, tmp_path / "tuned.onnx.data"] if fixture.external else [out]
    assert sorted(result.files) == sorted(map(str, expected_files))
    assert sorted(tmp_path.iterdir()) == sorted(expected_files)  # no temporary left behind
    assert result.verification.max_error <= result.verification.tolerance
    assert result.verification.identical_outputs == fixture.unchanged
    written, original = onnx.load(str(out)), onnx.load(str(fixture.path))
    assert written.opset_import == original.opset_import
    assert (written.ir_version, written.producer_name, written.producer_version) == (
        original.ir_version,
        original.producer_name,
        original.producer_version,
    )
    assert [o.name for o in written.graph.output] == [o.name for o in original.graph.output]
    assert any(p.key == "ntonnx.method" for p in written.metadata_props)


def test_rewrite_round_trip_matches_numpy(fixture, tmp_path):
    """Random (W, b) written into the head: outputs equal NumPy's v @ W.T + b then the post-ops."""
    original = load_model(fixture.path).proto
    spec = locate_head(original, output=fixture.output)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(spec.n_classes, spec.dim))
    b = rng.normal(size=spec.n_classes) if spec.has_bias else np.zeros(spec.n_classes)
    tuned = tuned_model(original, spec, W, b, {})
    stored_W, stored_b = read_head(
        tuned, spec if spec.pattern != "matmul_integer" else locate_head(tuned, output=fixture.output)
    )
    quantized = spec.dtype == "int8"
    assert relative_error(stored_W, W) < (4e-3 if quantized else 1e-6)
    assert relative_error(stored_b, b) < (4e-3 if quantized else 1e-6)

    n = fixture.batch or 7
    inputs = fixture.inputs(rng, n)
    names = [o.name for o in original.graph.output]
    got = run_with(tuned, inputs, [spec.embedding, *names], tmp_path / "tuned.onnx")
    want = run_with(original, inputs, names, tmp_path / "original.onnx")
    v = got[spec.embedding].astype(np.float64)
    if spec.pooling is not None:
        v = v[:, 0] if spec.pooling.kind == "take" else v.mean(axis=tuple(range(2, v.ndim)))
    logits = v.reshape(n, spec.dim) @ stored_W.T + stored_b
    output = got[spec.output]
    if "ZipMap" in spec.post_ops:
        output = np.array([[row[k] for k in sorted(row)] for row in output])
    expected = numpy_post_ops(logits, [*spec.inner_post_ops, *spec.post_ops])
    if "QuantizeDequantize" in spec.post_ops:  # the output is rounded to (and clipped by) its calibrated grid
        from ntonnx.graph.index import GraphIndex

        index = GraphIndex(tuned)
        dequantize = index.producer(spec.output)
        step, zero = (index.constant(name) for name in dequantize.input[1:3])
        info = np.iinfo(zero.dtype)
        grid = (np.clip(np.round(expected / step) + zero, info.min, info.max) - zero) * step
        assert np.abs(output.reshape(grid.shape) - grid).max() <= float(step) * 1.01  # a tie may round either way
    else:
        assert relative_error(output.reshape(expected.shape), expected) < 1e-5
    for name in fixture.unchanged:
        assert got[name].tobytes() == want[name].tobytes()


def run_with(model: onnx.ModelProto, inputs, outputs, path: Path) -> dict:
    """Run ``model`` (saved as ``path``, external data if large) fetching ``outputs`` by name."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in present)
    onnx.save(probe, str(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(outputs, inputs), strict=True))


def test_skl2onnx_label_follows_the_new_head(exported, tmp_path):
    """The label output is computed from the head, so it changes with it, consistently."""
    fixture = exported["skl_mlp_nozipmap"]
    result = ntonnx.tune(fixture.path, tmp_path / "t.onnx", data=labelled(fixture))
    assert result.verification.changed_outputs == ["label"]
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, fixture.inputs(np.random.default_rng(3), 20))
    np.testing.assert_array_equal(label, probabilities.argmax(axis=1))


def test_the_other_head_can_be_chosen(exported, tmp_path):
    fixture = exported["torch_ts_two_heads"]
    with pytest.raises(ntonnx.ModelError, match="--output NAME"):
        ntonnx.tune(fixture.path, tmp_path / "t.onnx", data=labelled(fixture))
    result = ntonnx.tune(
        fixture.path, tmp_path / "t.onnx", data=labelled(fixture, "aux"), head=ntonnx.HeadQuery(output="aux")
    )
    assert result.head.nodes == ["/aux/Gemm"] and result.verification.identical_outputs == ["logits"]


def test_qdq_matmul_add_head_is_refused_with_the_reason(tmp_path):
    """onnxruntime's QDQ quantizer re-quantizes a MatMul's product before the bias Add: not affine."""
    from tests.builders import head_model

    model, _ = head_model(layout="matmul_add", post_ops=("Softmax",))
    onnx.save(model, str(tmp_path / "float.onnx"))
    quantized = ort_qdq(tmp_path / "float.onnx", tmp_path / "qdq.onnx", features(6, "x"))
    with pytest.raises(ntonnx.ModelError, match=r"product of MatMul 'fc_matmul' is re-quantized.*--head-node"):
        locate_head(onnx.load(str(quantized)))


LINEAR_CLASSIFIERS = [name for name in FIXTURES if name.startswith(("skl_logreg", "skl_scaler", "skl_linearsvc"))]


@pytest.mark.parametrize("name", LINEAR_CLASSIFIERS)
def test_linear_classifier_tuned_end_to_end(name, exported, tmp_path):
    """``ntonnx tune`` on skl2onnx's LinearClassifier exports (exit 3 "no linear head" before), file reloaded.

    The attributes are rewritten, post_transform/multi_class/class labels kept, and onnxruntime's
    label and scores on the written file are those of the new head ``X' @ W.T + b`` (``X'`` the
    classifier's input, after the Scaler in a pipeline).
    """
    from click.testing import CliRunner
    from ntonnx_cli.main import main

    from ntonnx.graph.index import GraphIndex

    fixture = exported[name]
    data = labelled(fixture, n=120)
    np.savez(tmp_path / "d.npz", labels=data.labels, **data.inputs)
    out = tmp_path / "tuned.onnx"
    args = ["tune", fixture.path, "--data", tmp_path / "d.npz", "-o", out, "--method", "llr", "--json"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    written, original = onnx.load(str(out)), onnx.load(str(fixture.path))
    spec = locate_head(written)
    W, b = read_head(written, spec)
    assert relative_error(W, read_head(original, spec)[0]) > 1e-3  # re-fit, not copied

    def kept(model):
        node = GraphIndex(model).producer(spec.logits)
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if "coef" not in a.name}

    assert {k: v for k, v in kept(written).items() if k != "intercepts"} == {
        k: v for k, v in kept(original).items() if k != "intercepts"
    }
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = fixture.inputs(np.random.default_rng(5), 40)
    label, scores = session.run(None, x)
    features = run_with(written, x, [spec.embedding], tmp_path / "probe.onnx")[spec.embedding].astype(np.float64)
    logits = features @ W.T + b
    np.testing.assert_array_equal(label, predict(logits))
    if "ZipMap" in spec.post_ops:
        scores = np.array([[row[k] for k in sorted(row)] for row in scores])
    expected = numpy_post_ops(logits, [*spec.inner_post_ops, *spec.post_ops])
    assert relative_error(scores.reshape(expected.shape), expected) < 1e-5
