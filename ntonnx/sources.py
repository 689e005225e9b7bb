"""Which reader a ``--data`` path needs, and the options all readers share.

The kind of a source is inferred from the path (a folder of ``.npy`` files or of class
sub-folders, an ``.npz``, a table whose columns say whether it lists images, holds text or
features) or named with ``--format``. :func:`open_dataset` returns a :class:`~ntonnx.data.Dataset`
checked against the model's inputs and classes, having read only what labels need.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ntonnx.data import Dataset, InputSpec, load_npy_folder, load_npz, validate_heldout
from ntonnx.errors import DataError, UsageError
from ntonnx.preprocess import ImagePreprocess
from ntonnx.tables import TABLE_SUFFIXES, TableDataset, TableFile, read_labels, table_columns

FORMATS = ("npz", "npy", "image-folder", "image-manifest", "table", "text")


@dataclass(frozen=True)
class DataOptions:
    """How to read held-out data that is not already model-ready arrays.

    Attributes
    ----------
    format : one of :data:`FORMATS`; None infers it from the path.
    classes : class names in the model's output order; labels given as names map through it
        (default: the sorted unique names, or the sorted class folders).
    label_column, group_column : table columns of labels and (optional) groups; group_column
        None reads a ``group`` column when there is one.
    path_column : the image-path column of a manifest.
    features, feature_prefix : the columns (a list, or all with this prefix) forming the model's
        single input; by default each input reads the column of its name, or a single-input model
        takes every column but labels and groups.
    text_column, text_pair_column : the text (and second text of a pair) to tokenize.
    tokenizer : a Hugging Face ``tokenizer.json``; giving it makes a table a text source.
    max_length : tokens per sequence (default: the model's declared length, else the tokenizer's).
    pad_token : the padding token when the tokenizer file names none and has no ``[PAD]``/``<pad>``.
    image : image preprocessing settings.
    workers : image-decoding threads (default: up to 4, one per CPU).
    """

    format: str | None = None
    classes: tuple[str, ...] | None = None
    label_column: str = "label"
    group_column: str | None = None
    path_column: str = "path"
    features: tuple[str, ...] | None = None
    feature_prefix: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    pad_token: str | None = None
    image: ImagePreprocess = field(default_factory=ImagePreprocess)
    workers: int | None = None

    def with_classes(self, classes: Sequence[str]) -> DataOptions:
        """These options with a class list, so a second data set maps names as the first did."""
        return replace(self, classes=tuple(classes))


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
        return validate_heldout(load_npz(path), specs, n_classes, source=str(path), classes=classes)
    if kind == "npy":
        return validate_heldout(load_npy_folder(path), specs, n_classes, source=str(path), lazy=True, classes=classes)
    if kind in ("image-folder", "image-manifest"):
        from ntonnx.images import image_folder, image_manifest

        if len(specs) != 1:
            raise DataError(f"images feed one model input, but the model has inputs {[s.name for s in specs]}")
        pipeline = options.image.resolve(specs[0])
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
        from ntonnx.text import text_dataset

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


def source_digest(path: str | os.PathLike) -> str:
    """sha256 of a data file; for a folder, of its sorted listing (relative path and size of each file).

    A folder of images is not read twice just for provenance: the listing identifies it well
    enough to tell data sets apart.
    """
    path = Path(path)
    sha = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            sha.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\n".encode())
        return sha.hexdigest()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()
