"""Which reader a ``--data`` path needs: :func:`open_dataset` is the one entry point for data.

The kind of a source is inferred from the path (a folder of ``.npy`` files or of class
sub-folders, an ``.npz``, a table whose columns say whether it lists images, holds text or
features) or named with ``--format``. :func:`open_dataset` returns a :class:`~ntonnx.data.Dataset`
checked against the model's inputs and classes, having read only what labels need.
"""

from __future__ import annotations

import os
from pathlib import Path

from ntonnx.data.arrays import load_npy_folder, validate_arrays
from ntonnx.data.dataset import Dataset, InputSpec
from ntonnx.data.options import FORMATS, DataOptions
from ntonnx.data.tables import TABLE_SUFFIXES, TableDataset, TableFile, read_labels, table_columns
from ntonnx.errors import DataError, UsageError
from ntonnx.files import read_npz


def detect_format(path: str | os.PathLike, options: DataOptions) -> str:
    """The kind of source ``path`` is (one of :data:`FORMATS`)."""
    if options.format is not None:
        if options.format not in FORMATS:
            raise UsageError(f"--format '{options.format}' is unknown (choose from {', '.join(FORMATS)})")
        return options.format
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    if path.is_dir():
        if any(path.glob("*.npy")):
            return "npy"
        if any(p.is_dir() for p in path.iterdir()):
            return "image-folder"
        raise DataError(f"data folder '{path}' holds neither .npy arrays nor class sub-folders of images")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in TABLE_SUFFIXES:
        if options.tokenizer is not None:
            return "text"
        return "image-manifest" if options.path_column in TableFile(path).columns else "table"
    raise DataError(f"cannot tell the format of data '{path}' from its name; pass --format ({', '.join(FORMATS)})")


def open_dataset(
    path: str | os.PathLike, specs: list[InputSpec], n_classes: int, options: DataOptions | None = None
) -> Dataset:
    """Open ``path`` as labelled held-out data for a model with inputs ``specs`` and ``n_classes``.

    Labels (and groups) are read and checked now; model inputs are produced batch by batch when
    the data set is iterated. Errors are :class:`DataError`/:class:`UsageError` naming the file,
    row, column or option.
    """
    options = options or DataOptions()
    kind = detect_format(path, options)
    classes = list(options.classes) if options.classes is not None else None
    if kind == "npz":
        return validate_arrays(read_npz(path), specs, n_classes, source=str(path), classes=classes)
    if kind == "npy":
        return validate_arrays(load_npy_folder(path), specs, n_classes, source=str(path), lazy=True, classes=classes)
    if kind in ("image-folder", "image-manifest"):
        from ntonnx.data.images import image_folder, image_manifest

        if len(specs) != 1:
            raise DataError(f"images feed one model input, but the model has inputs {[s.name for s in specs]}")
        pipeline = options.image_settings().resolve(specs[0])
        if kind == "image-folder":
            if not Path(path).is_dir():
                raise DataError(f"image folder '{path}' does not exist")
            return image_folder(path, pipeline, n_classes, classes, options.workers)
        return image_manifest(
            path,
            pipeline,
            n_classes,
            path_column=options.path_column,
            label_column=options.label_column,
            group_column=options.group_column,
            classes=classes,
            workers=options.workers,
        )
    if kind == "text":
        from ntonnx.data.text import text_dataset

        if options.tokenizer is None:
            raise UsageError("text data needs --tokenizer tokenizer.json")
        return text_dataset(
            path,
            specs,
            n_classes,
            options.tokenizer,
            text_column=options.text_column,
            pair_column=options.text_pair_column,
            label_column=options.label_column,
            group_column=options.group_column,
            classes=classes,
            max_length=options.max_length,
            pad_token=options.pad_token,
        )
    table = TableFile(path)
    reserved = [c for c in (options.label_column, options.group_column or "group") if c]
    columns = table_columns(table, specs, options.features, options.feature_prefix, reserved)
    read = read_labels(table, n_classes, options.label_column, options.group_column, classes)
    return TableDataset(table, columns, specs, read.labels, read.groups, read.class_names, read.group_names)
