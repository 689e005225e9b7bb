"""Image folders and manifests: the tensors fed to the model equal Pillow + NumPy done by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_builders import passthrough_classifier, save

import ntonnx
from ntonnx import DataError, DataOptions, ImagePreprocess, UsageError

Image = pytest.importorskip("PIL.Image")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def reference(path, resize, crop, scale, mean, std, bgr=False, layout="NCHW") -> np.ndarray:
    """torchvision's Resize(int) -> CenterCrop -> ToTensor -> Normalize, written out directly."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize(size, Image.BILINEAR)
    left, top = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop))).astype(np.float32)
    if bgr:
        pixels = pixels[..., ::-1]
    values = (pixels * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return values.transpose(2, 0, 1) if layout == "NCHW" else values


def write_folder(root, classes=("cat", "dog", "bird"), per_class=3, seed=0):
    """Images of varied sizes, formats and modes (RGB PNG, JPEG, grayscale, RGBA, palette)."""
    rng = np.random.default_rng(seed)
    modes = ["RGB", "L", "RGBA", "P"]
    for c_index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 12 + 3 * i, 17 - c_index
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(modes[(i + c_index) % 4])
            image.save(root / name / f"img{i}.{'jpg' if i == 1 and image.mode in ('RGB', 'L') else 'png'}")
    return root


@pytest.fixture
def nchw_model(tmp_path):
    return save(passthrough_classifier([("x", np.float32, ["N", 3, 8, 8])]), tmp_path / "nchw.onnx")


def imagenet(**overrides) -> DataOptions:
    return DataOptions(image=ImagePreprocess.preset("imagenet").merged(ImagePreprocess(**overrides)))


def test_image_folder_feeds_torchvision_style_tensors(tmp_path, nchw_model):
    root = write_folder(tmp_path / "images")
    acts = ntonnx.extract(
        nchw_model, root, data_options=imagenet(resize=10, crop=8), run=ntonnx.RunOptions(batch_size=4)
    )
    files = [f for c in ["bird", "cat", "dog"] for f in sorted((root / c).iterdir())]
    expected = np.stack([reference(f, 10, 8, 1 / 255, IMAGENET_MEAN, IMAGENET_STD).ravel() for f in files])
    np.testing.assert_allclose(acts.embeddings, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(acts.labels, np.repeat([0, 1, 2], 3))  # sorted folder order


def test_crop_defaults_to_the_models_image_size(tmp_path, nchw_model):
    root = write_folder(tmp_path / "images", per_class=1)
    options = DataOptions(image=ImagePreprocess(resize=9, scale=1 / 255))
    acts = ntonnx.extract(nchw_model, root, data_options=options)
    first = sorted((root / "bird").iterdir())[0]
    np.testing.assert_allclose(acts.embeddings[0], reference(first, 9, 8, 1 / 255, 0, 1).ravel(), atol=1e-6)


def test_manifest_with_names_groups_bgr_nhwc(tmp_path):
    write_folder(tmp_path / "data" / "images")
    files = sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    rows = ["path,label,group"] + [
        f"{f.relative_to(tmp_path / 'data').as_posix()},{f.parent.name},{'water' if i % 2 else 'land'}"
        for i, f in enumerate(files)
    ]
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    model = save(passthrough_classifier([("x", np.float32, ["N", 8, 8, 3])]), tmp_path / "nhwc.onnx")
    options = DataOptions(
        classes=("dog", "cat", "bird"),
        image=ImagePreprocess.preset("imagenet-caffe").merged(ImagePreprocess(resize=11, crop=8)),
    )
    result = ntonnx.evaluate(model, manifest, data_options=options)
    assert result.classes == {"dog": 0, "cat": 1, "bird": 2}
    assert result.metrics.group_sizes == {0: 5, 1: 4}  # 'land' < 'water'
    acts = ntonnx.extract(model, manifest, data_options=options)
    caffe_mean = [103.939, 116.779, 123.68]
    expected = np.stack(
        [reference(f, 11, 8, 1.0, caffe_mean, [1, 1, 1], bgr=True, layout="NHWC").ravel() for f in files]
    )
    np.testing.assert_allclose(acts.embeddings, expected, rtol=1e-6, atol=1e-4)
    assert acts.labels.tolist() == [{"dog": 0, "cat": 1, "bird": 2}[f.parent.name] for f in files]


def test_parquet_manifest_and_uint8_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    write_folder(tmp_path / "images", classes=("a", "b"), per_class=2)
    files = sorted((tmp_path / "images").rglob("*.*"))
    pq.write_table(
        pa.table({"file": [str(f) for f in files], "y": [int(f.parent.name == "b") for f in files]}),
        tmp_path / "m.parquet",
    )
    model = save(passthrough_classifier([("img", np.uint8, ["N", 6, 6, 3])], n_classes=2), tmp_path / "u8.onnx")
    options = DataOptions(path_column="file", label_column="y", image=ImagePreprocess(resize=7))
    acts = ntonnx.extract(model, tmp_path / "m.parquet", data_options=options)
    expected = np.stack([reference(f, 7, 6, 1.0, 0, 1, layout="NHWC").ravel() for f in files])
    np.testing.assert_array_equal(acts.embeddings, expected)
    assert acts.labels.tolist() == [0, 0, 1, 1]


def test_preprocess_file_and_preset_merge(tmp_path):
    config = tmp_path / "pre.json"
    config.write_text(json.dumps({"preset": "imagenet", "resize": [12, 10], "channel_order": "BGR"}))
    settings = ImagePreprocess.from_file(config)
    assert settings.resize == (12, 10) and settings.channel_order == "BGR" and settings.crop == 224
    config.write_text(json.dumps({"size": 3}))
    with pytest.raises(UsageError, match="unknown key 'size'"):
        ImagePreprocess.from_file(config)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_file", r"image '.*gone\.png' at row 1 does not exist"),
        ("undecodable", r"image '.*broken\.jpg' cannot be decoded"),
        ("label_out_of_range", r"column 'label' at row 2 is 7, outside the model's classes 0\.\.2"),
        ("unknown_name", r"column 'label' at row 0 is 'horse', not one of the classes"),
        ("no_path_column", r"has no column 'path' \(columns: \['file', 'label'\]\); pass --path-column"),
        ("empty", r"has zero samples"),
    ],
)
def test_manifest_errors_name_file_row_column(tmp_path, nchw_model, breakage, message):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(good)
    rows = {
        "missing_file": "path,label\ngood.png,0\ngone.png,1\n",
        "undecodable": "path,label\ngood.png,0\nbroken.jpg,1\n",
        "label_out_of_range": "path,label\ngood.png,0\ngood.png,1\ngood.png,7\n",
        "unknown_name": "path,label\ngood.png,horse\n",
        "no_path_column": "file,label\ngood.png,0\n",
        "empty": "path,label\n",
    }[breakage]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(rows)
    classes = ("cat", "dog", "bird") if breakage == "unknown_name" else None
    options = DataOptions(format="image-manifest", classes=classes, image=ImagePreprocess(crop=8))
    with pytest.raises(DataError, match=message):
        ntonnx.extract(nchw_model, manifest, data_options=options)


def test_folder_errors(tmp_path, nchw_model):
    root = write_folder(tmp_path / "images", classes=("cat", "dog"), per_class=1)
    options = DataOptions(image=ImagePreprocess(crop=8))
    with pytest.raises(DataError, match=r"2 class names \(cat, dog\) for a model with 3 classes; pass --classes"):
        ntonnx.extract(nchw_model, root, data_options=options)
    with pytest.raises(DataError, match=r"class 'bird' \(index 2\) has no samples"):
        ntonnx.extract(nchw_model, root, data_options=DataOptions(classes=("cat", "dog", "bird"), image=options.image))
    with pytest.raises(DataError, match=r"images/dog' is not one of the classes"):
        ntonnx.extract(nchw_model, root, data_options=DataOptions(classes=("cat", "emu", "owl"), image=options.image))
    (root / "emu").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*emu' has no images"):
        ntonnx.extract(nchw_model, root, data_options=options)


def test_size_clashes_are_usage_errors(tmp_path, nchw_model):
    root = write_folder(tmp_path / "images", per_class=1)
    with pytest.raises(UsageError, match=r"takes 8x8 images, preprocessing gives 224x224; pass --crop 8"):
        ntonnx.extract(nchw_model, root, data_options=imagenet())
    tall = save(passthrough_classifier([("x", np.float32, ["N", 3, 13, 8])]), tmp_path / "tall.onnx")
    with pytest.raises(DataError, match=r"image '.*img0.png' is \d+x12 after resizing, smaller than the 8x13 crop"):
        ntonnx.extract(tall, root, data_options=DataOptions(image=ImagePreprocess(crop=(13, 8))))
