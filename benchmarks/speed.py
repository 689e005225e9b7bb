"""Speed benchmark: what ntonnx costs on top of running the model once, head-solve times, Ray.

Part 1, on EfficientNet-Lite0 with its ImageNet weights at 96 px (``benchmarks/export_imagenet.py``
exports it once, with a 2-way head for the ratios and its real 1000-way head): wall time, CPU time
and peak memory (RSS) of fresh processes over the same data (a folder of ``.npy`` arrays, memory-
mapped), batch size 64 and onnxruntime's default threads:

1. a bare onnxruntime loop (load the data, create a session, run every batch): the floor;
2. ``ntonnx extract`` (CLI; writes the activations file);
3. ``ntonnx tune`` end to end (CLI; extract, identify, solve, write and verify the model).

Each is timed from start to exit, run interleaved (1, 2, 3, 1, 2, 3, ...) so the ratios compare
like with like on a shared machine; medians of ``--repeats`` runs. Sizes: 1,000 and 20,000
synthetic images (smooth random colour fields labelled by their dominant channel), and the
1000-class model at 1,000 images. Memory target: what ntonnx needs beyond the floor (peak(2 or 3)
- peak(1)) within 1.5 x (embedding matrix + model file).

Part 2: ``fit_head`` alone on synthetic embeddings for N in {10k, 50k, 200k}, d in {512, 2048},
C in {2, 10, 1000}, class-balanced weights, started from a perturbed true head, one process per
problem (time limit ``--solve-timeout``).

Part 3: ``ntonnx.extract`` with ``--engine ray`` and 1, 2, 4 workers on a local Ray cluster
(``ray.init(num_cpus=os.cpu_count())``, started once per process, not timed) against the local
engine in the same process: the speed-up and a bit-for-bit check of the embeddings.

Run from the repository root::

    python benchmarks/export_imagenet.py   # once (needs torch)
    python benchmarks/speed.py             # writes benchmarks/results/speed.md
    python benchmarks/speed.py --quick     # 1000 images only, 1 repeat, small solves; not written
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64
SIZES = (1000, 20000)
MANY_CLASSES_N = 2000  # two per class: one identifies, one tunes
RAY_N = 3000
RAY_WORKERS = (1, 2, 4)


def run_measured(args: list[str], timeout: float | None = None) -> dict:
    """Run a process with a time limit; its wall time and stdout (the worker reports its own memory)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"timeout": True, "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"timeout": False, "seconds": seconds, "stdout": out.decode()}


def peak_rss_of(args: list[str], timeout: float | None = None) -> tuple[float, float, float] | None:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one fresh process running ``args``.

    The process is this script's ``_measure`` worker, which runs ``args`` and reports its own
    ``VmHWM`` at exit: the rusage of a forked child also counts the parent's pages at the fork.
    None when it ran past ``timeout`` seconds (it is killed).
    """
    import threading

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile(prefix="ntonnx-peak-", suffix=".txt") as report:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "_measure", report.name, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if timer is not None:
            timer.cancel()
            if timeout and seconds >= timeout:
                proc.stderr.close()
                return None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
        peak_kib = int(Path(report.name).read_text())
    return seconds, usage.ru_utime + usage.ru_stime, peak_kib / 1024


def measure_worker(report: str, args: list[str]) -> None:
    """Run ``bare MODEL DATA BATCH`` or ``cli ARGS...`` and write this process's peak RSS (KiB)."""
    try:
        if args[0] == "bare":
            bare_loop(args[1], args[2], int(args[3]))
        else:
            from ntonnx_cli.main import main as cli_main

            code = cli_main(args[1:], standalone_mode=False)  # returns the exit code instead of exiting
            if code:
                sys.exit(code)
    finally:
        Path(report).write_text(str(int(_status_mib("VmHWM") * 1024)))


# ---------------------------------------------------------------------------------------------
# workers (run in their own process)


def bare_loop(model: str, data: str, batch: int) -> None:
    """The floor: load the data, create a session with default options, run every batch."""
    import onnxruntime as ort

    arrays = {p.stem: np.load(p, mmap_mode="r") for p in Path(data).glob("*.npy")}
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    n = len(arrays["labels"])
    for start in range(0, n, batch):
        session.run(None, {name: arrays[name][start : start + batch] for name in names})


def solve_worker(n: int, d: int, c: int, max_iter: int, seed: int = 0) -> None:
    """Time ``fit_head`` on a synthetic problem; prints JSON."""
    import warnings

    from ntonnx.method.solve import class_balanced_weights, fit_head

    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 10000):  # ReLU-like embeddings, generated in chunks
        X[start : start + 10000] = np.maximum(rng.standard_normal((min(10000, n - start), d), dtype=np.float32), 0)
    teacher = rng.standard_normal((c, d)).astype(np.float32) * (3 / np.sqrt(d))
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 10000):
        logits = X[start : start + 10000] @ teacher.T
        labels[start : start + 10000] = (logits + rng.gumbel(size=logits.shape)).argmax(1)
    W0 = teacher + rng.standard_normal(teacher.shape).astype(np.float32) * (0.3 / np.sqrt(d))
    init = (W0, np.zeros(c, dtype=np.float32))
    weights = class_balanced_weights(labels)
    base = _status_mib("VmHWM")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        fit = fit_head(X, labels, n_logits=c, sample_weight=weights, init=init, max_iter=max_iter)
        seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "n_iter": fit.n_iter,
                "converged": fit.converged,
                "rss_before_mib": base,
                "peak_rss_mib": peak,
                "embeddings_mib": X.nbytes / 2**20,
                "warnings": [str(w.message) for w in caught],
            }
        )
    )


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: peak RSS since exec), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) / 1024


# ---------------------------------------------------------------------------------------------
# part 1


def image_set(cache: Path, n: int, size: int = 96, classes: int = 2) -> Path:
    """``n`` synthetic images as a folder of ``.npy`` arrays (``image``, ``labels``), cached.

    Smooth random colour fields (12x12 noise upsampled, plus fine noise). With 2 classes, labelled
    1 when the red channel's mean exceeds the green one's: the embedding carries the signal, so the
    solve has a real problem to fit. With more, every class gets ``n / classes`` images at random
    (the re-fit needs samples of every class in both halves of the split).
    """
    path = cache / (f"images_{n}_{size}px" + (f"_{classes}classes" if classes != 2 else ""))
    if (path / "labels.npy").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images = np.lib.format.open_memmap(path / "image.npy", mode="w+", dtype=np.float32, shape=(n, 3, size, size))
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        coarse = rng.standard_normal((k, 3, size // 8, size // 8)).astype(np.float32)
        x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
        x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
        images[start : start + k] = x
        labels[start : start + k] = x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))
    images.flush()
    if classes != 2:
        labels = rng.permutation(n) % classes
    np.save(path / "labels.npy", labels)
    return path


def pipeline_table(
    model: Path,
    datasets: dict[str, Path],
    repeats: int,
    log,
    extract: tuple[str, ...] = (),
    timeout: float | None = None,
) -> str:
    """One row per process and data set; a process that runs past ``timeout`` once is not run again."""
    from ntonnx import inspect_model

    head = inspect_model(model).head
    model_mib = model.stat().st_size / 2**20
    rows = []
    with tempfile.TemporaryDirectory(prefix="ntonnx-speed-") as tmp:
        acts, tuned = str(Path(tmp) / "acts.npz"), str(Path(tmp) / "tuned.onnx")
        for label, data in datasets.items():
            n = _count(data)
            commands = {
                "bare onnxruntime loop": ["bare", str(model), str(data), str(BATCH)],
                "ntonnx extract": ["cli", "-q", "extract", str(model), "--data", str(data), "-o", acts,
                                   "--batch-size", str(BATCH), "--force"],
                "ntonnx tune": ["cli", "-q", "tune", str(model), "--data", str(data), "-o", tuned,
                                "--batch-size", str(BATCH), "--force"],
            }  # fmt: skip
            if label not in extract:
                del commands["ntonnx extract"]
            times: dict[str, list[float]] = {k: [] for k in commands}
            cpu: dict[str, list[float]] = {k: [] for k in commands}
            peaks: dict[str, list[float]] = {k: [] for k in commands}
            timed_out: set[str] = set()
            for r in range(repeats):
                for name, command in commands.items():
                    if name in timed_out:
                        continue
                    measured = peak_rss_of(command, None if name.startswith("bare") else timeout)
                    if measured is None:
                        timed_out.add(name)
                        log(f"  {label} repeat {r + 1}: {name}: over {timeout:.0f} s, stopped")
                        continue
                    seconds, cpu_seconds, peak = measured
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                    peaks[name].append(peak)
                    log(f"  {label} repeat {r + 1}: {name}: {seconds:.2f} s ({cpu_seconds:.2f} s CPU), {peak:.0f} MiB")
            floor = "bare onnxruntime loop"
            floor_t, floor_c, floor_m = (statistics.median(v[floor]) for v in (times, cpu, peaks))
            emb_mib = n * head.dim * 4 / 2**20
            budget = 1.5 * (emb_mib + model_mib)
            for name in commands:
                if name in timed_out:
                    rows.append(
                        f"| {label} | {name} | did not finish within {timeout:.0f} s | – | – | – | – | – | – | – |"
                    )
                    continue
                t, c, m = (statistics.median(v[name]) for v in (times, cpu, peaks))
                ratio = "1 (floor)" if name.startswith("bare") else f"{t / floor_t:.3f}"
                cpu_ratio = "1 (floor)" if name.startswith("bare") else f"{c / floor_c:.3f}"
                extra = "–" if name.startswith("bare") else f"{m - floor_m:+.0f}"
                verdict = "–" if name.startswith("bare") else ("yes" if m - floor_m <= budget else "**no**")
                rows.append(
                    f"| {label} | {name} | {t:.2f} ({min(times[name]):.2f}–{max(times[name]):.2f}) | {ratio} "
                    f"| {c:.2f} | {cpu_ratio} | {m:.0f} | {extra} | {budget:.0f} | {verdict} |"
                )
    return "\n".join(
        [
            f"Model: `{model.parent.name}/{model.name}` ({model_mib:.1f} MiB, embedding {head.dim}-d, "
            f"{head.n_classes} classes), batch {BATCH}, "
            f"onnxruntime CPU with default threads, medians of {repeats} interleaved repeats; "
            "each row is a fresh process timed from start to exit.",
            "",
            "| data | process | wall s (min–max) | wall ratio to floor | CPU s | CPU ratio | peak RSS MiB "
            "| beyond floor MiB | budget 1.5×(emb+model) MiB | within |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def _count(data: Path) -> int:
    return len(np.load(Path(data) / "labels.npy", mmap_mode="r"))


# ---------------------------------------------------------------------------------------------
# part 2


def solve_table(sizes: list[int], dims: list[int], classes: list[int], timeout: float, log) -> str:
    """One process per problem. A 3-iteration probe first: problems whose iterations are so slow
    that 100 of them would pass ``timeout`` are reported by their time per iteration only."""
    rows = []
    for n in sizes:
        for d in dims:
            for c in classes:
                emb = n * d * 4 / 2**20
                probe = _solve(n, d, c, 3, timeout)
                per_iter = probe["seconds"] / max(probe["n_iter"], 1) if probe else None
                info = _solve(n, d, c, 1000, timeout) if per_iter is not None and per_iter * 100 <= timeout else None
                if info is None:
                    slow = f"{per_iter:.1f} s per iteration" if per_iter is not None else f"probe > {timeout:.0f} s"
                    rows.append(f"| {n} | {d} | {c} | not run to convergence ({slow}) | – | – | – | {emb:.0f} |")
                    log(f"  solve N={n} d={d} C={c}: {slow}")
                    continue
                note = "" if info["converged"] else " (not converged)"
                rows.append(
                    f"| {n} | {d} | {c} | {info['seconds']:.2f}{note} | {info['n_iter']} "
                    f"| {info['peak_rss_mib']:.0f} | {info['peak_rss_mib'] - info['rss_before_mib']:+.0f} | {emb:.0f} |"
                )
                log(f"  solve N={n} d={d} C={c}: {info['seconds']:.2f} s, {info['n_iter']} iterations")
    return "\n".join(
        [
            "| N | d | C | solve s | L-BFGS iterations | peak RSS MiB | RSS added by the solve MiB "
            "| embeddings (float32) MiB |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def _solve(n: int, d: int, c: int, max_iter: int, timeout: float) -> dict | None:
    result = run_measured([sys.executable, __file__, "_solve", str(n), str(d), str(c), str(max_iter)], timeout)
    return None if result["timeout"] else json.loads(result["stdout"].strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# part 3


def ray_worker(model: str, data: str, repeats: int, workers: list[int]) -> None:
    """Time local and Ray extraction, interleaved, in one process with one local cluster; prints JSON."""
    import ray

    import ntonnx

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    times: dict[str, list[float]] = {"local": [], **{str(k): [] for k in workers}}
    equal = True
    with tempfile.TemporaryDirectory(prefix="ntonnx-ray-") as tmp:
        for r in range(repeats):
            start = time.perf_counter()
            local = ntonnx.extract(model, data, run=ntonnx.RunOptions(provider="cpu"))
            times["local"].append(time.perf_counter() - start)
            for k in workers:
                run = ntonnx.RunOptions(provider="cpu", engine="ray", ray_workers=k)
                start = time.perf_counter()
                acts = ntonnx.extract(model, data, run=run, save_to=Path(tmp) / f"acts_{k}_{r}")
                times[str(k)].append(time.perf_counter() - start)
                equal &= acts.embeddings.tobytes() == local.embeddings.tobytes()
    print(json.dumps({"times": times, "equal": bool(equal)}))


def ray_table(model: Path, data: Path, repeats: int, log) -> str:
    result = run_measured(
        [sys.executable, __file__, "_ray", str(model), str(data), str(repeats), *map(str, RAY_WORKERS)]
    )
    info = json.loads(result["stdout"].strip().splitlines()[-1])
    times = info["times"]
    local = statistics.median(times["local"])
    one = statistics.median(times[str(RAY_WORKERS[0])])
    rows = [f"| local engine (one session, default threads) | {local:.2f} ({min(times['local']):.2f}–"
            f"{max(times['local']):.2f}) | 1 | – |"]  # fmt: skip
    for k in RAY_WORKERS:
        t = times[str(k)]
        rows.append(f"| `--engine ray --ray-workers {k}` | {statistics.median(t):.2f} ({min(t):.2f}–{max(t):.2f}) "
                    f"| {local / statistics.median(t):.2f} | {one / statistics.median(t):.2f} |")  # fmt: skip
        log(f"  ray {k} workers: {statistics.median(t):.2f} s (local {local:.2f} s)")
    return "\n".join([
        f"`ntonnx.extract` of {_count(data)} images, `{model.parent.name}/{model.name}`, in one process with a local "
        f"Ray cluster of {os.cpu_count()} CPUs started once beforehand (not timed); each Ray run starts its actor "
        f"pool (one onnxruntime session per actor, 1 intra-op thread each). Medians of {repeats}, interleaved. "
        f"Embeddings bit-identical to the local engine's in every run: **{'yes' if info['equal'] else 'NO'}**.",
        "",
        "| engine | wall s (min–max) | speed-up over local | speed-up over 1 Ray worker |",
        "|---|---|---|---|",
        *rows,
    ])  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        measure_worker(sys.argv[2], sys.argv[3:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_solve":
        solve_worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_ray":
        ray_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), [int(k) for k in sys.argv[5:]])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    parser.add_argument("--solve-timeout", type=float, default=120.0, help="per solve process, seconds")
    parser.add_argument("--tune-timeout", type=float, default=300.0, help="per 1000-class tune process, seconds")
    parser.add_argument("--quick", action="store_true", help="1000 images, 1 repeat, N=10k solves; not written")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-solve", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from benchmarks.export_imagenet import model_path

    binary, many = model_path(args.cache, 2), model_path(args.cache, 1000)
    if not (args.skip_pipeline and args.skip_ray) and not (binary.exists() and many.exists()):
        sys.exit(f"{binary} or {many} is missing: run python benchmarks/export_imagenet.py --cache {args.cache}")
    repeats = 1 if args.quick else args.repeats
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    sections = ["## Speed", ""]
    if not args.skip_pipeline:
        sizes = SIZES[:1] if args.quick else SIZES
        datasets = {f"{n} images": image_set(args.cache, n) for n in sizes}
        sections += [
            "### ntonnx vs a bare onnxruntime loop (EfficientNet-Lite0 ImageNet backbone, 96 px, 2-way head)",
            "",
            pipeline_table(binary, datasets, repeats, log, extract=(f"{sizes[0]} images",)),
            "",
            "### Many classes end to end (EfficientNet-Lite0 with its 1000-way ImageNet head, 96 px)",
            "",
            pipeline_table(
                many,
                {f"{MANY_CLASSES_N} images": image_set(args.cache, MANY_CLASSES_N, classes=1000)},
                repeats,
                log,
                timeout=args.tune_timeout,
            ),
            "",
        ]
    if not args.skip_ray:
        sections += [
            "### Extraction on Ray (`--engine ray`)",
            "",
            ray_table(binary, image_set(args.cache, RAY_N), repeats, log),
            "",
        ]
    if not args.skip_solve:
        sizes = [10_000] if args.quick else [10_000, 50_000, 200_000]
        sections += [
            "### Head solve (`fit_head`), synthetic ReLU embeddings, class-balanced",
            "",
            solve_table(sizes, [512, 2048], [2, 10, 1000], args.solve_timeout, log),
            "",
        ]
    sections.append(
        f"_Measured by `python benchmarks/speed.py` in {time.perf_counter() - start:.0f} s on {os.cpu_count()} "
        f"CPU cores (shared with other work: 1-minute load average {load_before:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end)._"
    )
    report = "\n".join(sections)
    print(report)
    if not (args.quick or args.no_write):
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "speed.md").write_text(report + "\n")
        log(f"written to {RESULTS / 'speed.md'}")


if __name__ == "__main__":
    main()
