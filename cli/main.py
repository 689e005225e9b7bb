"""``ntonnx`` commands. Each parses options, calls one :mod:`ntonnx` function and prints.

Errors the user can fix end in one line on stderr and the exit code of their kind (see
``ntonnx.errors``); anything else is an internal error (exit 1), with the traceback only under
``--debug``. Nothing here prompts, so the commands are safe in pipelines.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

import click

from ntonnx.data.options import DataOptions
from ntonnx.graph.options import HeadQuery, RunOptions
from ntonnx.method.options import TuneOptions

from .options import OptionGroup

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
_DATA_HELP = (
    "Labelled data: .npz, folder of .npy, image folder (root/<class>/*.jpg), image manifest, "
    "CSV/Parquet/JSONL table or text (with --tokenizer)."
)


class _Group(click.Group):
    """Maps library errors to one-line messages and exit codes."""

    def invoke(self, ctx: click.Context):
        from ntonnx.errors import NtonnxError

        debug = "--debug" in sys.argv or ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except NtonnxError as exc:
            if debug:
                raise
            click.echo(f"ntonnx: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("ntonnx: interrupted; no output was written", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except click.UsageError as exc:  # a bad option value: one line, like our own errors
            click.echo(f"ntonnx: error: {exc.format_message()}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            if debug:
                raise
            click.echo(
                f"ntonnx: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ntonnx")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (no progress bar, no warnings).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool, quiet: bool) -> None:
    """Remove spurious bias from an exported ONNX classifier (NeuronTune on the head)."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="ntonnx: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
    ctx.obj = {"quiet": quiet}


HEAD = OptionGroup(HeadQuery, "head__")
RUN = OptionGroup(RunOptions, "run__")
DATA = OptionGroup(DataOptions, "data__")
TUNE = OptionGroup(TuneOptions, "tune__")


def _progress(ctx: click.Context):
    """A progress-bar factory for the library, shown only on a terminal."""
    if ctx.obj.get("quiet") or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def factory(description: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=description, unit="sample", file=sys.stderr, leave=False)
        ctx.call_on_close(bar.close)
        return bar.update

    return factory


def _emit(as_json: bool, payload: dict, text: Callable[[], str]) -> None:
    click.echo(json.dumps(payload, indent=2) if as_json else text())


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@HEAD
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(model: str, as_json: bool, **params) -> None:
    """Show MODEL's inputs, outputs and classifier head. Exit 3 if no head is found."""
    from ntonnx import inspect_model
    from ntonnx.errors import ModelError

    from .render import model_summary

    info = inspect_model(model, head=HEAD.build(params))
    _emit(as_json, info.to_dict(), lambda: model_summary(info))
    if info.head is None:
        click.echo(f"ntonnx: error: {info.head_error}", err=True)
        sys.exit(ModelError.exit_code)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--data", required=True, type=click.Path(), help=_DATA_HELP)
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Where to write activations (.npz).")
@DATA
@RUN
@HEAD
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def extract(ctx, model, data, out, as_json, **params):
    """Run MODEL once over DATA; save embeddings, logits and labels for tune --activations."""
    import ntonnx

    acts = ntonnx.extract(
        model,
        data,
        head=HEAD.build(params),
        run=RUN.build(params),
        data_options=DATA.build(params),
        progress=_progress(ctx),
        save_to=out,
    )
    payload = {
        "output": out,
        "n_samples": len(acts),
        "embedding_dim": int(acts.embeddings.shape[1]),
        "n_logits": int(acts.logits.shape[1]),
        "provider": acts.provider,
    }
    _emit(
        as_json,
        payload,
        lambda: (
            f"wrote {out}: {len(acts)} samples, embedding width {payload['embedding_dim']} (provider {acts.provider})"
        ),
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--data", type=click.Path(), help="Labelled held-out data (identification, and tuning by split).")
@click.option("--activations", type=click.Path(), help="Activations from 'ntonnx extract' instead of --data.")
@click.option("--tune-data", type=click.Path(), help="Separate tuning set (data or activations).")
@click.option("--eval-data", type=click.Path(), help="Data for the before/after table (default: the held-out data).")
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Path of the tuned model to write.")
@TUNE
@click.option("--report", type=click.Path(), help="Also write the JSON report to this file.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the input model).")
@DATA
@RUN
@HEAD
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.pass_context
def tune(ctx, model, data, activations, tune_data, eval_data, out, report, force, as_json, **params) -> None:
    """Re-solve MODEL's head on held-out data and write a drop-in debiased model to --out."""
    import ntonnx

    from .render import metrics_table

    options = TUNE.build(params)
    result = ntonnx.tune(
        model,
        out,
        data=data,
        activations=activations,
        tune_data=tune_data,
        eval_data=eval_data,
        options=options,
        head=HEAD.build(params),
        run=RUN.build(params),
        data_options=DATA.build(params),
        force=force,
        progress=_progress(ctx),
    )
    payload = result.to_dict()
    if report:
        _write_json(report, payload)

    def text() -> str:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        return "\n".join([
            f"wrote {result.out} (method {options.method}; {len(result.suppressed)} of {result.head.dim} neurons "
            f"suppressed; provider {result.provider})",
            f"verified: logits match embedding @ W.T + b to {result.verification.max_error:.1e}",
            *([f"auto chose: {result.selected}"] if result.selected else []),
            *([f"classes: {_mapping(result.classes)}"] if result.classes else []),
            f"evaluated on {result.evaluated_on}:",
            metrics_table({"before": result.before, "after": result.after}),
            f"time: {timings}",
        ])  # fmt: skip

    _emit(as_json, payload, text)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--data", required=True, type=click.Path(), help=_DATA_HELP)
@DATA
@RUN
@HEAD
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def evaluate(ctx, model, data, as_json, **params) -> None:
    """Accuracy, per-class and per-group accuracy of MODEL on DATA."""
    import ntonnx

    from .render import metrics_table

    result = ntonnx.evaluate(
        model,
        data,
        head=HEAD.build(params),
        run=RUN.build(params),
        data_options=DATA.build(params),
        progress=_progress(ctx),
    )
    _emit(
        as_json,
        result.to_dict(),
        lambda: (
            f"{model} on {data} (provider {result.provider}):\n"
            + (f"classes: {_mapping(result.classes)}\n" if result.classes else "")
            + metrics_table({"model": result.metrics})
        ),
    )


def _mapping(classes: dict[str, int]) -> str:
    return ", ".join(f"{name}={index}" for name, index in classes.items())


def _write_json(path: str, payload: dict) -> None:
    """Write the report atomically so a pipeline never reads half of it."""
    from ntonnx.files import write_atomic

    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2)), option="--report")


if __name__ == "__main__":
    main()
