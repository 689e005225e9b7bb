"""How held-out data is read: the settings every reader shares, declared once (see :mod:`ntonnx.options`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ntonnx.data.preprocess import ImagePreprocess
from ntonnx.options import interval, name_list, names_or_file, option, optional, validate

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
    preset : a named image preprocessing convention (``imagenet``, ``imagenet-caffe``, ``imagenet-tf``).
    preprocess_file : a JSON file of image preprocessing settings (applied over the preset).
    image : image preprocessing settings given one by one (applied over the file and the preset).
    workers : image-decoding threads (default: up to 4, one per CPU).
    """

    format: str | None = field(
        default=None, metadata=option("Data format (default: inferred).", flag="--format", choices=FORMATS)
    )
    classes: tuple[str, ...] | None = field(
        default=None,
        metadata=option("Class names in model order: a,b,c or a file.", metavar="LIST|FILE", parse=names_or_file),
    )
    label_column: str = field(default="label", metadata=option("Table column of labels."))
    group_column: str | None = field(
        default=None, metadata=option("Table column of groups (default: 'group' if present).")
    )
    path_column: str = field(default="path", metadata=option("Manifest column of image paths."))
    features: tuple[str, ...] | None = field(
        default=None,
        metadata=option("Table columns forming the model's single input.", metavar="A,B,...", parse=name_list),
    )
    feature_prefix: str | None = field(
        default=None, metadata=option("Table columns with this prefix form the input.", metavar="PREFIX")
    )
    text_column: str = field(default="text", metadata=option("Table column of text."))
    text_pair_column: str | None = field(default=None, metadata=option("Table column of the second text of a pair."))
    tokenizer: str | None = field(
        default=None, metadata=option("Hugging Face tokenizer.json for text data.", metavar="PATH")
    )
    max_length: int | None = field(
        default=None,
        metadata=option("Tokens per sequence (default: the model's).", kind=int, constraint=optional(interval(1))),
    )
    pad_token: str | None = field(default=None, metadata=option("Padding token when the tokenizer names none."))
    preset: str | None = field(
        default=None,
        metadata=option("Image preprocessing preset.", choices=("imagenet", "imagenet-caffe", "imagenet-tf")),
    )
    preprocess_file: str | None = field(
        default=None, metadata=option("Image preprocessing JSON file.", flag="--preprocess", metavar="PATH")
    )
    image: ImagePreprocess = field(default_factory=ImagePreprocess)
    workers: int | None = field(
        default=None,
        metadata=option("Image-decoding threads (default: up to 4).", kind=int, constraint=optional(interval(1))),
    )

    def __post_init__(self):
        validate(self)

    def with_classes(self, classes: Sequence[str]) -> DataOptions:
        """These options with a class list, so a second data set maps names as the first did."""
        return replace(self, classes=tuple(classes))

    def image_settings(self) -> ImagePreprocess:
        """The image preprocessing in force: the preset, then the JSON file, then the single settings."""
        settings = ImagePreprocess.preset(self.preset) if self.preset else ImagePreprocess()
        if self.preprocess_file:
            settings = settings.merged(ImagePreprocess.from_file(self.preprocess_file))
        return settings.merged(self.image)
