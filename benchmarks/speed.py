"""Speed benchmark: what ntonnx costs on top of running the model once, and head-solve times.

Part 1, on the pretrained CNN case (EfficientNet-Lite0, ``fashion_scenes``): wall time and peak
memory (RSS) of three processes over the same ``.npz`` data, batch size 64 and onnxruntime's
default threads:

1. a bare onnxruntime loop (load the data, create a session, run every batch): the floor;
2. ``ntonnx extract`` (CLI; writes the activations file);
3. ``ntonnx tune`` end to end (CLI; extract, identify, solve, write and verify the model).

Each is a fresh process timed from start to exit, run interleaved (1, 2, 3, 1, 2, 3, ...) so the
ratios compare like with like on a shared machine; medians of ``--repeats`` runs. It is done on
the case's test split (2000 images) and on a larger synthetic set of 20000 freshly composed
scenes. Memory target: what ntonnx needs beyond the floor (peak(2 or 3) - peak(1)) should stay
within 1.5 x (embedding matrix + model file).

Part 2: ``fit_head`` alone on synthetic embeddings for N in {10k, 50k, 200k}, d in {512, 2048},
C in {2, 10, 1000}, class-balanced weights, started from a perturbed true head, one process per
problem (time limit ``--solve-timeout``).

Run from the repository root::

    python benchmarks/speed.py           # writes benchmarks/results/speed.md
    python benchmarks/speed.py --quick   # 2000 images only, 1 repeat, small solves; not written
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
SYNTHETIC_N = 20000


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


def peak_rss_of(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one fresh process running ``args``.

    The process is this script's ``_measure`` worker, which runs ``args`` and reports its own
    ``VmHWM`` at exit: the rusage of a forked child also counts the parent's pages at the fork.
    """
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
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
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

            cli_main(args[1:], standalone_mode=False)
    finally:
        Path(report).write_text(str(int(_status_mib("VmHWM") * 1024)))


# ---------------------------------------------------------------------------------------------
# workers (run in their own process)


def bare_loop(model: str, data: str, batch: int) -> None:
    """The floor: load the data, create a session with default options, run every batch."""
    import onnxruntime as ort

    with np.load(data) as archive:
        arrays = {k: archive[k] for k in archive.files}
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


def synthetic_set(case: Path, n: int, seed: int) -> Path:
    """``n`` freshly composed scenes (group-balanced) in the case's input format, cached."""
    from sample_models.cases import common
    from sample_models.cases.fashion_scenes import CLASS_OF, compose, load_fashion

    path = case.parent / f"fashion_scenes_synthetic_{n}_seed{seed}.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    images, fashion_labels = load_fashion()
    keep = np.flatnonzero(np.isin(fashion_labels, list(CLASS_OF)))
    pick = rng.choice(keep, size=n, replace=len(keep) < n)
    labels = np.array([CLASS_OF[c] for c in fashion_labels[pick]], dtype=np.int64)
    attribute = common.balanced_attribute(labels, rng)
    inputs = np.empty((n, 3, 96, 96), dtype=np.float32)
    for start in range(0, n, 1000):
        inputs[start : start + 1000] = compose(images[pick[start : start + 1000]], attribute[start : start + 1000], rng)
    common.save_split(path, {"image": inputs}, labels, common.groups_of(labels, attribute))
    return path


def pipeline_table(model: Path, datasets: dict[str, Path], repeats: int, log) -> str:
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
                                   "--batch-size", str(BATCH)],
                "ntonnx tune": ["cli", "-q", "tune", str(model), "--data", str(data), "-o", tuned,
                                "--batch-size", str(BATCH), "--force"],
            }  # fmt: skip
            times: dict[str, list[float]] = {k: [] for k in commands}
            cpu: dict[str, list[float]] = {k: [] for k in commands}
            peaks: dict[str, list[float]] = {k: [] for k in commands}
            for r in range(repeats):
                for name, command in commands.items():
                    seconds, cpu_seconds, peak = peak_rss_of(command)
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                    peaks[name].append(peak)
                    log(f"  {label} repeat {r + 1}: {name}: {seconds:.2f} s ({cpu_seconds:.2f} s CPU), {peak:.0f} MiB")
            floor = "bare onnxruntime loop"
            floor_t, floor_c, floor_m = (statistics.median(v[floor]) for v in (times, cpu, peaks))
            emb_mib = n * head.dim * 4 / 2**20
            budget = 1.5 * (emb_mib + model_mib)
            for name in commands:
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
            f"Model: `{model.name}` ({model_mib:.1f} MiB, embedding {head.dim}-d), batch {BATCH}, "
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
    with np.load(data) as archive:
        return len(archive["labels"])


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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        measure_worker(sys.argv[2], sys.argv[3:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_solve":
        solve_worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--solve-timeout", type=float, default=120.0, help="per solve process, seconds")
    parser.add_argument("--quick", action="store_true", help="2000 images, 1 repeat, N=10k solves; not written")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-solve", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from sample_models.cases import ensure

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    sections = ["## Speed", ""]
    if not args.skip_pipeline:
        case = ensure("fashion_scenes", 0, log=log)
        datasets = {"test split, 2000 images": case / "test.npz"}
        if not args.quick:
            datasets[f"synthetic, {SYNTHETIC_N} images"] = synthetic_set(case, SYNTHETIC_N, seed=1)
        sections += [
            "### ntonnx vs a bare onnxruntime loop (EfficientNet-Lite0, 96 px)",
            "",
            pipeline_table(case / "model.onnx", datasets, 1 if args.quick else args.repeats, log),
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
