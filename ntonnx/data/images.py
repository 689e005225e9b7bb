"""Labelled images: a class-folder tree or a manifest table, decoded in parallel while the model runs.

Two layouts users have: ``root/<class>/*.jpg`` (torchvision's ``ImageFolder``: classes in sorted
folder order unless a class list is given, files in sorted order, sub-folders included) and a
CSV/Parquet/JSONL manifest with ``path,label[,group]`` columns, paths relative to the manifest.
Only file names and labels are held; pixels exist for at most two batches at a time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ntonnx.data.dataset import StreamingDataset
from ntonnx.data.labels import encode_labels
from ntonnx.data.preprocess import ImagePipeline
from ntonnx.data.tables import TableFile, read_labels
from ntonnx.errors import DataError

#: What torchvision's ImageFolder accepts.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})


class ImageDataset(StreamingDataset):
    """Image files and their labels; each batch is decoded by a pool of ``workers`` threads.

    Parameters
    ----------
    paths : one image file per sample (strings: 20k ``Path`` objects alone cost megabytes).
    pipeline : the preprocessing of the model's image input.
    workers : decoding threads (Pillow releases the GIL while decoding and resizing).
    """

    def __init__(
        self,
        paths: list[str],
        pipeline: ImagePipeline,
        labels: np.ndarray,
        groups: np.ndarray | None,
        source: str,
        class_names: list[str] | None = None,
        group_names: list[str] | None = None,
        workers: int | None = None,
    ):
        super().__init__(labels, groups, source, class_names, group_names)
        self.paths = paths
        self.pipeline = pipeline
        self.workers = workers or min(4, os.cpu_count() or 1)

    def produce(self, batch_size: int) -> Iterator[np.ndarray]:
        """Decoded, resized, cropped uint8 pixels of shape (n, height, width, channels) per batch."""
        pipeline = self.pipeline
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ntonnx-decode") as pool:
            for start in range(0, len(self.paths), batch_size):
                paths = self.paths[start : start + batch_size]
                # Workers write their image straight into the batch: no per-image copies pile up.
                pixels = np.empty((len(paths), *pipeline.size, pipeline.channels), dtype=np.uint8)

                def fill(i: int, pixels: np.ndarray = pixels, paths: list[str] = paths) -> None:
                    pixels[i] = pipeline.decode(paths[i])

                for _ in pool.map(fill, range(len(paths))):
                    pass
                yield pixels

    def finish(self, made: np.ndarray) -> dict[str, np.ndarray]:
        """Scale, normalise and lay out the pixels as the model's input tensor, in parallel slices."""
        n, height, width, channels = made.shape
        shape = (n, channels, height, width) if self.pipeline.layout == "NCHW" else made.shape
        tensor = np.empty(shape, dtype=self.pipeline.dtype)
        bounds = np.linspace(0, n, min(self.workers, n) + 1).astype(int)
        slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        with ThreadPoolExecutor(max_workers=len(slices), thread_name_prefix="ntonnx-convert") as pool:
            for _ in pool.map(lambda part: self.pipeline.tensor(made[part], tensor[part]), slices):
                pass
        return {self.pipeline.input_name: tensor}


def image_folder(
    root: str | os.PathLike,
    pipeline: ImagePipeline,
    n_classes: int,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """The images under ``root/<class>/``, labelled by folder."""
    root = Path(root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"image folder '{root}' has no class sub-folders (expected {root}/<class>/<image>.jpg)")
    if classes is not None:
        strays = [f for f in folders if f not in classes]
        if strays:
            raise DataError(f"image folder '{root}/{strays[0]}' is not one of the classes {list(classes)}")
    paths: list[str] = []
    names: list[str] = []
    for folder in folders:
        files = _images_under(os.path.join(root, folder))
        if not files:
            raise DataError(
                f"class folder '{root / folder}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "every class needs samples"
            )
        paths += files
        names += [folder] * len(files)
    labels, class_names = encode_labels(
        np.array(names), n_classes, str(root), "class folder", list(classes) if classes is not None else None
    )
    return ImageDataset(paths, pipeline, labels, None, str(root), class_names, workers=workers)


def _images_under(folder: str) -> list[str]:
    """Image files below ``folder`` in torchvision's ``ImageFolder`` order (sorted walk, sorted names)."""
    return [
        os.path.join(directory, name)
        for directory, _, names in sorted(os.walk(folder, followlinks=True))
        for name in sorted(names)
        if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
    ]


def image_manifest(
    manifest: str | os.PathLike,
    pipeline: ImagePipeline,
    n_classes: int,
    *,
    path_column: str = "path",
    label_column: str = "label",
    group_column: str | None = None,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """The images a manifest table lists, with their labels (and groups).

    ``group_column`` None reads a ``group`` column if there is one.
    """
    table = TableFile(manifest)
    table.require(path_column, "--path-column")
    read = read_labels(table, n_classes, label_column, group_column, classes, extra=[path_column])
    source = str(table.path)
    paths = []
    for row, name in enumerate(read.columns[path_column].tolist()):
        if not isinstance(name, str) or not name:
            raise DataError(f"data '{source}': column '{path_column}' is empty at row {row}")
        path = os.path.join(table.path.parent, name)
        if not os.path.isfile(path):
            raise DataError(f"data '{source}': image '{path}' at row {row} does not exist")
        paths.append(path)
    return ImageDataset(paths, pipeline, read.labels, read.groups, source, read.class_names, read.group_names, workers)
