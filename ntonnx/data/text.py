"""Labelled text from a CSV/Parquet/JSONL table, tokenized with a Hugging Face ``tokenizer.json``.

The tokenizer file is the one shipped with the model (the ``tokenizers`` library reads it; no
network), so token ids match the deployment's. Sequences are truncated and padded to one length
(the option, else the model's declared sequence length, else the tokenizer's own truncation
length) and cast to the model's integer dtype. Only the inputs the model declares are produced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ntonnx.data.dataset import InputSpec, StreamingDataset, dims, require_extra
from ntonnx.data.tables import Labelled, TableFile, read_labels
from ntonnx.errors import DataError, UsageError, first_line

#: Model input name -> attribute of a ``tokenizers.Encoding``.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>")


class TextDataset(StreamingDataset):
    """Texts (or text pairs) of a table, tokenized batch by batch into the model's inputs.

    Parameters
    ----------
    table : the file; ``labelled`` holds its labels and groups, read up front.
    text_column, pair_column : the text, and the second text of a pair (e.g. NLI hypothesis).
    tokenizer : a ``tokenizers.Tokenizer`` with truncation and padding set (see :func:`load_tokenizer`).
    specs : the model's inputs, each one of :data:`ENCODING_FIELDS`.
    """

    def __init__(
        self,
        table: TableFile,
        labelled: Labelled,
        text_column: str,
        pair_column: str | None,
        tokenizer,
        specs: list[InputSpec],
    ):
        super().__init__(labelled.labels, labelled.groups, str(table.path), labelled.class_names, labelled.group_names)
        self.table = table
        self.text_columns = [text_column] + ([pair_column] if pair_column else [])
        self.tokenizer = tokenizer
        self.specs = specs

    def produce(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start, chunk in self.table.stream(self.text_columns, batch_size):
            texts = [self._strings(chunk.column(c), c, start) for c in self.text_columns]
            encodings = self.tokenizer.encode_batch(list(zip(*texts, strict=True)) if len(texts) > 1 else texts[0])
            yield {
                spec.name: np.array([getattr(e, ENCODING_FIELDS[spec.name]) for e in encodings], dtype=spec.dtype)
                for spec in self.specs
            }

    def _strings(self, column, name: str, start: int) -> list[str]:
        values = column.to_pylist()
        for row, value in enumerate(values):
            if not isinstance(value, str):
                what = "empty" if value is None else f"{type(value).__name__} {value!r}, not text,"
                raise DataError(f"data '{self.source}': column '{name}' is {what} at row {start + row}")
        return values


def text_dataset(
    path: str | os.PathLike,
    specs: list[InputSpec],
    n_classes: int,
    tokenizer: str | os.PathLike,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    group_column: str | None = None,
    classes: list[str] | None = None,
    max_length: int | None = None,
    pad_token: str | None = None,
) -> TextDataset:
    """Open a text table for a model whose inputs are token ids (and masks)."""
    for spec in specs:
        if spec.name not in ENCODING_FIELDS:
            raise DataError(
                f"model input '{spec.name}' is not one a tokenizer makes ({', '.join(ENCODING_FIELDS)}); "
                "text data cannot feed it"
            )
        if len(spec.shape) != 2 or spec.dtype.kind not in "iu":
            raise DataError(f"model input '{spec.name}' {dims(spec)} of {spec.dtype} is not a batch of token ids")
    table = TableFile(path)
    table.require(text_column, "--text-column")
    if pair_column is not None:
        table.require(pair_column, "--text-pair-column")
    labelled = read_labels(table, n_classes, label_column, group_column, classes)
    length = _max_length(max_length, specs)
    return TextDataset(table, labelled, text_column, pair_column, load_tokenizer(tokenizer, length, pad_token), specs)


def load_tokenizer(path: str | os.PathLike, max_length: int | None, pad_token: str | None = None):
    """A ``tokenizers.Tokenizer`` that truncates and pads every sequence to ``max_length``.

    ``max_length`` None takes the tokenizer file's own truncation length. The padding token is
    ``pad_token``, else the file's padding setting, else ``[PAD]``/``<pad>`` from its vocabulary.
    """
    tokenizers = require_extra("tokenizers", "text", "tokenizing text")
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--tokenizer file '{path}' does not exist")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception
        raise UsageError(f"--tokenizer '{path}' is not a readable tokenizer.json: {first_line(exc)}") from None
    if max_length is None:
        max_length = (tokenizer.truncation or {}).get("max_length")
        if max_length is None:
            raise UsageError("the model's sequence length is free and the tokenizer sets none; pass --max-length N")
    padding = dict(tokenizer.padding or {})
    if pad_token is not None or not padding:
        token = pad_token or next((t for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None), None)
        if token is None or tokenizer.token_to_id(token) is None:
            raise UsageError(f"tokenizer '{path}' has no padding token {token or ''}; pass --pad-token TOKEN")
        padding.update(pad_token=token, pad_id=tokenizer.token_to_id(token))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(
        direction=padding.get("direction", "right"),
        pad_id=padding["pad_id"],
        pad_type_id=padding.get("pad_type_id", 0),
        pad_token=padding["pad_token"],
        length=max_length,
    )
    return tokenizer


def _max_length(option: int | None, specs: list[InputSpec]) -> int | None:
    declared = {spec.shape[1] for spec in specs if isinstance(spec.shape[1], int)}
    if len(declared) > 1:
        raise DataError(f"the model's token inputs declare different lengths {sorted(declared)}")
    fixed = declared.pop() if declared else None
    if option is not None:
        if option < 1:
            raise UsageError(f"--max-length must be >= 1, got {option}")
        if fixed is not None and option != fixed:
            raise UsageError(f"--max-length {option} does not match the model's sequence length {fixed}")
        return option
    return fixed
