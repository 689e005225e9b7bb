"""Extraction on a Ray cluster: the model pass split over actors, the rows written in order on the driver.

The data set is a Ray Dataset of sample indices (blocks of ``ROWS_PER_TASK``). ``map_batches`` sends runs of
indices to a pool of actors, each holding one onnxruntime session and its own opened copy of the
data (re-opened from the same path with the same options, so every form ntonnx reads works: arrays,
image folders and manifests, tables, text); an actor cuts its rows out of the data
(:func:`window`), runs them and returns the ids with their embeddings and logits. The driver
writes each batch at its rows of an activations folder (:class:`~ntonnx.activations.ActivationsWriter`),
which refuses a row twice and checks at the end that none is missing. Actors that die are restarted
and their batches retried (Ray Data's actor pools default to unlimited ``max_restarts`` and
``max_task_retries``), so a lost worker costs time, never rows.

Every worker must read the model and the data at the same paths as the driver (a shared file
system, or the same files on every node). Ray is imported only here, lazily: the ``ray`` extra.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ntonnx.activations import Activations, ActivationsWriter
from ntonnx.data.dataset import ArrayDataset, Dataset, require_extra
from ntonnx.errors import UsageError
from ntonnx.graph.heads import HeadSpec, head_activations

logger = logging.getLogger("ntonnx")

#: Samples per Ray task: large enough that scheduling costs little next to the model, small
#: enough that a retried task repeats little work and the actors stay evenly loaded.
ROWS_PER_TASK = 1024


def extract_on_ray(
    model_path: str | os.PathLike,
    head: HeadSpec,
    data: Dataset,
    opener: Callable[[], Dataset] | None,
    folder: str | os.PathLike,
    *,
    model_digest: str,
    provider: str,
    batch_size: int,
    address: str | None,
    workers: int | None,
    order: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> Activations:
    """Run the model over ``data`` on Ray; return the activations, memory-mapped from ``folder``.

    Parameters
    ----------
    model_path : the model file, readable by every worker.
    data : the data set as opened on the driver (labels, groups, length).
    opener : re-opens ``data`` on a worker (from its path); None ships ``data`` itself (in memory).
    folder : where the activations are written (see :class:`~ntonnx.activations.ActivationsWriter`).
    provider : ``auto``, ``cpu``, ``cuda`` or an onnxruntime name, resolved on each worker;
        ``auto`` and ``cuda`` give each actor a GPU when the cluster has GPUs.
    address : the cluster to join (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a
        local one (or uses the one this process already joined).
    workers : actors (default: one per CPU the cluster has, at most 8).
    order : row ``j`` holds sample ``order[j]`` (a permutation), as in ``extract_activations``.
    """
    ray = require_extra("ray", "ray", "--engine ray")
    if not ray.is_initialized():
        local = {} if address else {"include_dashboard": False}
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **local)
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0) > 0 and provider.lower() in ("auto", "cuda", "cudaexecutionprovider")
    size = workers or max(1, min(8, int(resources.get("CPU", 1))))
    n = len(data)
    rows = None if order is None else np.argsort(order)
    source = ray.put(data) if opener is None else None
    # Index blocks put in the object store by the driver: no read tasks, which would wait for CPUs
    # that the actor pool holds.
    # Tasks of ROWS_PER_TASK rows, smaller for small sets so that every actor gets several.
    per_task = max(batch_size, min(ROWS_PER_TASK, -(-n // (4 * size))))
    chunks = np.array_split(np.arange(n, dtype=np.int64), max(1, -(-n // per_task)))
    indices = ray.data.from_numpy(chunks)
    results = indices.map_batches(
        _Extractor,
        fn_constructor_args=(str(Path(model_path).resolve()), head, opener, source, provider, batch_size),
        batch_size=per_task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=1,
        num_gpus=1 if gpus else 0,
    )
    writer: ActivationsWriter | None = None
    ran_on = provider
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        ids = batch["data"].astype(np.int64)
        if writer is None:
            writer = ActivationsWriter(
                folder, data.labels if order is None else data.labels[order],
                None if data.groups is None else (data.groups if order is None else data.groups[order]),
                dim=batch["embeddings"].shape[1], n_logits=batch["logits"].shape[1],
                dtype=batch["embeddings"].dtype, logits_dtype=batch["logits"].dtype,
            )  # fmt: skip
        writer.write(ids if rows is None else rows[ids], batch["embeddings"], batch["logits"])
        ran_on = str(batch["provider"][0])
        if progress is not None:
            progress(len(ids))
    if writer is None:
        raise UsageError(f"data '{data.source}' has no samples")
    writer.close(model_digest, ran_on)
    return Activations.load(folder)


class _Extractor:
    """One Ray actor: an onnxruntime session and the data, opened once; called with runs of sample ids."""

    def __init__(self, model_path, head, opener, source, provider, batch_size):
        from ntonnx.graph.model_io import load_model
        from ntonnx.graph.runtime import ModelRunner, resolve_providers

        cpus = max(1, int(_assigned_cpus()))
        self.runner = ModelRunner(
            load_model(model_path).proto,
            [head.embedding, head.logits],
            resolve_providers(provider),
            model_path,
            threads=cpus,
        )
        if opener is not None:
            self.data = opener()
        else:
            import ray

            self.data = ray.get(source)
        self.head = head
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["data"], dtype=np.int64)
        embeddings, logits = [], []
        for start, stop in _runs(ids):
            raw = self.runner.run(window(self.data, start, stop), self.batch_size)
            e, z = head_activations(self.head, *raw)
            embeddings.append(e)
            logits.append(z)
        return {
            "data": ids,
            "embeddings": np.concatenate(embeddings),
            "logits": np.concatenate(logits),
            "provider": np.full(len(ids), self.runner.provider),
        }


def _assigned_cpus() -> float:
    """CPUs Ray gave this actor (1 unless asked otherwise)."""
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 1)


def _runs(ids: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive ids, in order."""
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    for part in np.split(ids, breaks):
        if len(part):
            yield int(part[0]), int(part[-1]) + 1


def window(data: Dataset, start: int, stop: int) -> Dataset:
    """Samples ``start`` to ``stop`` of ``data`` as a data set of their own (inputs made only for them).

    Arrays (in memory or memory-mapped) are sliced, image lists cut; tables and text are streamed
    from the start of the file up to ``stop`` (a reader cannot seek to a row), so each task of a
    large table re-reads what comes before its rows: prefer ``.npy`` folders or image manifests
    for large sets.
    """
    from ntonnx.data.images import ImageDataset
    from ntonnx.data.tables import TableDataset
    from ntonnx.data.text import TextDataset

    labels = data.labels[start:stop]
    groups = None if data.groups is None else data.groups[start:stop]
    if isinstance(data, ArrayDataset):
        inputs = {name: array[start:stop] for name, array in data.inputs.items()}
        return dataclasses.replace(data, inputs=inputs, labels=labels, groups=groups)
    part = copy.copy(data)
    part.labels, part.groups = labels, groups
    if isinstance(data, ImageDataset):
        part.paths = data.paths[start:stop]
        return part
    if isinstance(data, TableDataset | TextDataset):
        part.table = _TableWindow(data.table, start, stop)
        return part
    raise UsageError(f"--engine ray cannot split data '{data.source}' ({type(data).__name__}); use --engine local")


class _TableWindow:
    """A table file seen from row ``start`` to ``stop``: its ``stream`` yields only those rows,
    with their row numbers in the whole file (for messages)."""

    def __init__(self, table, start: int, stop: int):
        self.table, self.start, self.stop = table, start, stop
        self.path = table.path

    def stream(self, columns, batch_size: int, numeric=()) -> Iterator[tuple[int, object]]:
        import pyarrow as pa

        pending, first = [], self.start
        for at, chunk in self.table.stream(columns, max(batch_size, 4096), numeric):
            end = at + chunk.num_rows
            if end <= self.start:
                continue
            if at >= self.stop:
                break
            pending.append(chunk.slice(max(0, self.start - at), min(end, self.stop) - max(at, self.start)))
            table = pa.concat_tables(pending)
            while table.num_rows >= batch_size:
                yield first, table.slice(0, batch_size)
                table, first = table.slice(batch_size), first + batch_size
            pending = [table] if table.num_rows else []
        if pending and pending[0].num_rows:
            yield first, pending[0]
