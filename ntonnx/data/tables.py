"""Tables (CSV, TSV, Parquet, JSON Lines) read column by column and streamed in row batches.

:class:`TableFile` is the one place ntonnx reads tabular files, with pyarrow: image manifests,
feature tables and text tables all go through it, so every source reports a bad file, a missing
column or an empty cell the same way, with the row (counted from 0, header excluded) and column.
:class:`TableDataset` feeds feature columns to the model: a list or a prefix of columns forming
one model input, or one column per model input (a scalar or a list per row).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ntonnx.data.dataset import InputSpec, StreamingDataset, dims, require_extra
from ntonnx.data.labels import encode_groups, encode_labels
from ntonnx.errors import DataError, first_line

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def _pyarrow():
    return require_extra("pyarrow", "tables", "reading CSV, Parquet and JSON Lines data")


class TableFile:
    """One tabular file; nothing but its schema is read until columns are asked for.

    Parameters
    ----------
    path : a ``.csv``, ``.tsv``, ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson`` file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.kind = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if self.kind is None:
            raise DataError(
                f"data file '{self.path}' is not a table: expected one of {', '.join(sorted(TABLE_SUFFIXES))}"
            )
        if not self.path.is_file():
            raise DataError(f"data file '{self.path}' does not exist")
        self.columns = self._schema().names

    def require(self, column: str, option: str) -> str:
        """``column``, or a :class:`DataError` listing the columns there are and the option to fix it."""
        if column not in self.columns:
            raise DataError(f"data '{self.path}' has no column '{column}' (columns: {self.columns}); pass {option}")
        return column

    def read(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Whole columns as NumPy arrays (strings as objects), streamed so only they are held."""
        pa = _pyarrow()
        parts = [chunk for _, chunk in self.stream(columns, 1 << 16)]
        if not parts:
            return {name: np.array([], dtype=object) for name in columns}
        table = pa.concat_tables(parts)
        return {name: table.column(name).to_numpy() for name in columns}

    def stream(
        self, columns: Sequence[str], batch_size: int, numeric: Sequence[str] = ()
    ) -> Iterator[tuple[int, object]]:
        """``(first row, pyarrow.Table)`` pairs of exactly ``batch_size`` rows (the last may be fewer).

        ``numeric`` CSV columns are parsed as float64: type inference would otherwise pick a type
        from the first block (e.g. int64) that a later block may contradict (``0.5``).
        """
        pa = _pyarrow()
        pending: list = []
        count, start = 0, 0
        for batch in self._record_batches(list(columns), numeric):
            pending.append(batch)
            count += batch.num_rows
            while count >= batch_size:
                table = pa.Table.from_batches(pending)
                yield start, table.slice(0, batch_size)
                rest = table.slice(batch_size)
                pending, count, start = rest.to_batches(), rest.num_rows, start + batch_size
        if count:
            yield start, pa.Table.from_batches(pending)

    def _record_batches(self, columns: list[str], numeric: Sequence[str]) -> Iterator:
        pa = _pyarrow()
        try:
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                yield from pq.ParquetFile(self.path).iter_batches(batch_size=1 << 14, columns=columns)
                return
            reader = self._open(columns, {name: pa.float64() for name in numeric})
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch.select(columns)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"data file '{self.path}' cannot be read as {self.kind}: {first_line(exc)}") from None

    def _open(self, columns: list[str] | None, types: dict | None = None):
        """A pyarrow streaming reader of a CSV/TSV/JSONL file (Parquet is read by row groups)."""
        if self.kind == "jsonl":
            import pyarrow.json as pajson

            return pajson.open_json(self.path)
        import pyarrow.csv as pacsv

        return pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t" if self.kind == "tsv" else ","),
            # Only an empty cell is missing: "nan"/"inf" stay numbers so they are reported as such.
            convert_options=pacsv.ConvertOptions(
                include_columns=columns or [],
                column_types=types or {},
                null_values=[""],
                strings_can_be_null=True,
            ),
        )

    def _schema(self):
        pa = _pyarrow()
        try:
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                return pq.read_schema(self.path)
            return self._open(None).schema
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"data file '{self.path}' cannot be read as {self.kind}: {first_line(exc)}") from None


class Labelled(NamedTuple):
    """Labels and groups read from a table, and other whole columns read with them."""

    labels: np.ndarray
    class_names: list[str] | None
    groups: np.ndarray | None
    group_names: list[str] | None
    columns: dict[str, np.ndarray]


def read_labels(
    table: TableFile,
    n_classes: int,
    label_column: str = "label",
    group_column: str | None = None,
    classes: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> Labelled:
    """Read and encode the label column, the group column and ``extra`` columns of ``table``.

    ``group_column`` None reads a ``group`` column if there is one.
    """
    wanted = [table.require(label_column, "--label-column"), *extra]
    if group_column is not None:
        wanted.append(table.require(group_column, "--group-column"))
    elif "group" in table.columns:
        group_column = "group"
        wanted.append(group_column)
    values = table.read(wanted)
    if not len(values[label_column]):
        raise DataError(f"data '{table.path}' has zero samples")
    labels, class_names = encode_labels(
        values[label_column], n_classes, str(table.path), f"column '{label_column}'", classes
    )
    groups, group_names = None, None
    if group_column is not None:
        groups, group_names = encode_groups(values[group_column], str(table.path), f"column '{group_column}'")
    return Labelled(labels, class_names, groups, group_names, values)


class TableDataset(StreamingDataset):
    """Model inputs read from feature columns of a table, batch by batch.

    Parameters
    ----------
    table : the file.
    columns : model input name -> the columns that form it (several scalar columns, or one
        column holding a scalar or a list per row).
    specs : the model's inputs.
    labels, groups, class_names, group_names : read up front (see :mod:`ntonnx.data.labels`).
    """

    def __init__(
        self,
        table: TableFile,
        columns: dict[str, list[str]],
        specs: list[InputSpec],
        labels: np.ndarray,
        groups: np.ndarray | None,
        class_names: list[str] | None = None,
        group_names: list[str] | None = None,
    ):
        super().__init__(labels, groups, str(table.path), class_names, group_names)
        self.table = table
        self.columns = columns
        self.specs = {spec.name: spec for spec in specs}

    def produce(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        wanted = [c for cols in self.columns.values() for c in cols]
        for start, chunk in self.table.stream(wanted, batch_size, numeric=wanted):
            yield {name: self._input(chunk, cols, self.specs[name], start) for name, cols in self.columns.items()}

    def _input(self, chunk, cols: list[str], spec: InputSpec, start: int) -> np.ndarray:
        parts = [column_values(chunk.column(c), c, spec.dtype, self.source, start) for c in cols]
        values = np.stack(parts, axis=1) if len(parts) > 1 else parts[0].reshape(len(parts[0]), -1)
        return values.reshape((len(values), *sample_shape(spec, values.shape[1], cols)))


def table_columns(
    table: TableFile,
    specs: list[InputSpec],
    features: Sequence[str] | None,
    prefix: str | None,
    reserved: Sequence[str],
) -> dict[str, list[str]]:
    """Which columns feed which model input.

    A feature list or prefix forms the model's single input; otherwise each input reads the
    column of its name, and a single-input model with no such column takes every column but the
    label and group ones.
    """
    if features or prefix:
        if len(specs) != 1:
            raise DataError(
                f"--features/--feature-prefix form one model input, but the model has inputs "
                f"{[s.name for s in specs]}; name one column after each input instead"
            )
        if features:
            cols = [table.require(c, "--features with existing column names") for c in features]
        else:
            cols = [c for c in table.columns if c.startswith(prefix) and c not in reserved]
            if not cols:
                raise DataError(
                    f"data '{table.path}' has no column starting with '{prefix}' (columns: {table.columns})"
                )
        sample_shape(specs[0], len(cols), cols)
        return {specs[0].name: cols}
    if all(spec.name in table.columns for spec in specs):
        return {spec.name: [spec.name] for spec in specs}
    if len(specs) == 1:
        cols = [c for c in table.columns if c not in reserved]
        if not cols:
            raise DataError(f"data '{table.path}' has no feature columns besides {list(reserved)}")
        sample_shape(specs[0], len(cols), cols)
        return {specs[0].name: cols}
    missing = next(spec.name for spec in specs if spec.name not in table.columns)
    raise DataError(
        f"data '{table.path}' has no column for model input '{missing}' (columns: {table.columns}); "
        "name one column per model input"
    )


def sample_shape(spec: InputSpec, k: int, cols: list[str]) -> tuple[int, ...]:
    """The per-sample shape ``k`` values take for ``spec``, or a :class:`DataError` if none fits."""
    want = spec.shape[1:]
    fixed = [d for d in want if isinstance(d, int)]
    if len(want) == 1 and (not fixed or fixed[0] == k):
        return (k,)
    if len(want) == 0 and k == 1:
        return ()
    if len(fixed) == len(want) and math.prod(fixed) == k:
        return tuple(fixed)
    what = f"column '{cols[0]}'" if len(cols) == 1 else f"{k} feature columns ({cols[0]}..{cols[-1]})"
    raise DataError(f"model input '{spec.name}' needs {dims(spec)} per batch; {what} give {k} values per row")


def column_values(column, name: str, dtype: np.dtype, source: str, start: int) -> np.ndarray:
    """A column of numbers (or of equal-length lists of numbers) as an array of ``dtype``.

    Raises a :class:`DataError` naming the row and column of an empty cell, a NaN/Inf, or a
    list whose length differs from the first row's.
    """
    pa = _pyarrow()
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        row = int(pc.index(column.is_null(), True).as_py())
        raise DataError(f"data '{source}': column '{name}' is empty at row {start + row}")
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lengths = pc.list_value_length(column).to_numpy()
        uneven = np.flatnonzero(lengths != lengths[0]) if len(lengths) else []
        if len(uneven):
            raise DataError(
                f"data '{source}': column '{name}' at row {start + uneven[0]} has {lengths[uneven[0]]} values, "
                f"row {start} has {lengths[0]}"
            )
        flat = column.flatten()
        if flat.null_count:
            raise DataError(f"data '{source}': column '{name}' has an empty value in a list near row {start}")
        values = _numbers(flat, name, dtype, source).reshape(len(column), int(lengths[0]) if len(lengths) else 0)
    else:
        values = _numbers(column, name, dtype, source)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise DataError(f"data '{source}': column '{name}' at row {row} is NaN or Inf")
    return values


def _numbers(array, name: str, dtype: np.dtype, source: str) -> np.ndarray:
    pa = _pyarrow()
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return array.to_numpy(zero_copy_only=False).astype(dtype)
    if pa.types.is_floating(kind) and dtype.kind == "f":
        return array.to_numpy(zero_copy_only=False).astype(dtype)
    if pa.types.is_floating(kind):
        raw = array.to_numpy(zero_copy_only=False)
        if np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
            return raw.astype(dtype)
        raise DataError(f"data '{source}': column '{name}' holds fractions, model input needs {dtype}")
    raise DataError(f"data '{source}': column '{name}' holds {kind}, expected numbers")
