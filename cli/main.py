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


def _head_options(func: Callable) -> Callable:
    """--output/--head-node/--embedding: override head detection."""
    func = click.option("--embedding", metavar="TENSOR", help="Name of the head's input tensor (skip detection).")(func)
    func = click.option("--head-node", metavar="NAME", help="Name of the head node (skip detection).")(func)
    func = click.option("--output", "output_name", metavar="NAME", help="Graph output to follow to the head.")(func)
    return func


def _run_options(func: Callable) -> Callable:
    """--batch-size/--provider: how the model is run."""
    func = click.option(
        "--provider",
        metavar="NAME",
        default="auto",
        show_default=True,
        help="Execution provider: auto (CUDA if available, else CPU), cpu, cuda, or a full onnxruntime name.",
    )(func)
    func = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)(func)
    return func


_FORMATS = ("npz", "npy", "image-folder", "image-manifest", "table", "text")


def _data_options(func: Callable) -> Callable:
    """How --data (and --tune-data/--eval-data) are read: format, columns, tokenizer, image preprocessing."""
    options = [
        click.option("--format", "data_format", type=click.Choice(_FORMATS), help="Data format (default: inferred)."),
        click.option("--classes", metavar="LIST|FILE", help="Class names in model order: a,b,c or a file."),
        click.option("--label-column", default="label", show_default=True, help="Table column of labels."),
        click.option("--group-column", help="Table column of groups (default: 'group' if present)."),
        click.option("--path-column", default="path", show_default=True, help="Manifest column of image paths."),
        click.option("--features", metavar="A,B,...", help="Table columns forming the model's single input."),
        click.option("--feature-prefix", metavar="PREFIX", help="Table columns with this prefix form the input."),
        click.option("--text-column", default="text", show_default=True, help="Table column of text."),
        click.option("--text-pair-column", help="Table column of the second text of a pair."),
        click.option("--tokenizer", type=click.Path(), help="Hugging Face tokenizer.json for text data."),
        click.option("--max-length", type=click.IntRange(min=1), help="Tokens per sequence (default: the model's)."),
        click.option("--pad-token", help="Padding token when the tokenizer names none."),
        click.option("--preset", help="Image preprocessing preset: imagenet, imagenet-caffe, imagenet-tf."),
        click.option("--preprocess", "preprocess_file", type=click.Path(), help="Image preprocessing JSON file."),
        click.option("--resize", metavar="N|H,W", help="Resize the shorter side to N, or to exactly H,W."),
        click.option("--crop", metavar="N|H,W", help="Center crop (default: the model's image size)."),
        click.option("--scale", metavar="X", help="Multiply pixels (0..255) by X first, e.g. 1/255."),
        click.option("--mean", metavar="M[,M,M]", help="Subtract per channel (model channel order)."),
        click.option("--std", metavar="S[,S,S]", help="Divide per channel (model channel order)."),
        click.option("--channel-order", type=click.Choice(["RGB", "BGR"], case_sensitive=False)),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False)),
        click.option("--dtype", "pixel_dtype", metavar="DTYPE", help="Expected model input dtype (a check)."),
        click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest", "lanczos"])),
        click.option("--workers", type=click.IntRange(min=1), help="Image-decoding threads (default: up to 4)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _read_data_options(args: dict):
    """A DataOptions from the values of the options :func:`_data_options` adds."""
    import os

    from ntonnx import DataOptions, ImagePreprocess

    image = ImagePreprocess.preset(args["preset"]) if args["preset"] else ImagePreprocess()
    if args["preprocess_file"]:
        image = image.merged(ImagePreprocess.from_file(args["preprocess_file"]))
    image = image.merged(
        ImagePreprocess(
            resize=_numbers(args["resize"], "--resize", int),
            crop=_numbers(args["crop"], "--crop", int),
            scale=_numbers(args["scale"], "--scale", float, single=True),
            mean=_numbers(args["mean"], "--mean", float),
            std=_numbers(args["std"], "--std", float),
            channel_order=args["channel_order"],
            layout=args["layout"],
            dtype=args["pixel_dtype"],
            interpolation=args["interpolation"],
        )
    )
    classes = args["classes"]
    if classes is not None:
        if os.path.isfile(classes):
            with open(classes, encoding="utf-8") as handle:
                classes = [line.strip() for line in handle if line.strip()]
        else:
            classes = [c.strip() for c in classes.split(",") if c.strip()]
    return DataOptions(
        format=args["data_format"],
        classes=tuple(classes) if classes is not None else None,
        label_column=args["label_column"],
        group_column=args["group_column"],
        path_column=args["path_column"],
        features=tuple(c.strip() for c in args["features"].split(",")) if args["features"] else None,
        feature_prefix=args["feature_prefix"],
        text_column=args["text_column"],
        text_pair_column=args["text_pair_column"],
        tokenizer=args["tokenizer"],
        max_length=args["max_length"],
        pad_token=args["pad_token"],
        image=image,
        workers=args["workers"],
    )


def _numbers(text: str | None, option: str, kind: type, single: bool = False):
    """``"256"`` -> 256, ``"224,224"`` -> (224, 224), ``"1/255"`` -> 0.00392...; None stays None."""
    from fractions import Fraction

    from ntonnx.errors import UsageError

    if text is None:
        return None
    try:
        values = [kind(Fraction(part.strip())) for part in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{option} must be a number or comma-separated numbers, got '{text}'") from None
    if single and len(values) != 1:
        raise UsageError(f"{option} takes one number, got '{text}'")
    return values[0] if len(values) == 1 else tuple(values)


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
@_head_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(model: str, output_name, head_node, embedding, as_json: bool) -> None:
    """Show MODEL's inputs, outputs and classifier head. Exit 3 if no head is found."""
    from cli.render import model_summary
    from ntonnx import inspect_model
    from ntonnx.errors import ModelError

    info = inspect_model(model, output=output_name, head_node=head_node, embedding=embedding)
    _emit(as_json, info.to_dict(), lambda: model_summary(info))
    if info.head is None:
        click.echo(f"ntonnx: error: {info.head_error}", err=True)
        sys.exit(ModelError.exit_code)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--data", required=True, type=click.Path(), help=_DATA_HELP)
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Where to write activations (.npz).")
@_data_options
@_run_options
@_head_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def extract(ctx, model, data, out, batch_size, provider, output_name, head_node, embedding, as_json, **data_args):
    """Run MODEL once over DATA; save embeddings, logits and labels for tune --activations."""
    import ntonnx

    acts = ntonnx.extract(
        model,
        data,
        data_options=_read_data_options(data_args),
        batch_size=batch_size,
        provider=provider,
        output=output_name,
        head_node=head_node,
        embedding=embedding,
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
@click.option(
    "--method",
    default="neurontune",
    show_default=True,
    help="neurontune, llr, dfr, afr, erm, or auto (label-free choice among re-fits; ignores --l2).",
)
@click.option(
    "--rule", default="all", show_default=True, help="Neuron is spurious if delta > threshold for all/any class."
)
@click.option("--threshold", type=float, default=0.0, show_default=True, help="The paper's lambda.")
@click.option("--l2", type=float, default=1e-3, show_default=True, help="Ridge strength on standardised embeddings.")
@click.option("--afr-gamma", type=float, default=4.0, show_default=True, help="AFR's weight temperature.")
@click.option("--split", type=float, default=0.5, show_default=True, help="Identification share of each class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the identification/tuning split.")
@click.option("--max-iter", type=int, default=1000, show_default=True, help="L-BFGS iteration limit.")
@click.option("--report", type=click.Path(), help="Also write the JSON report to this file.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the input model).")
@_data_options
@_run_options
@_head_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.pass_context
def tune(
    ctx,
    model,
    data,
    activations,
    tune_data,
    eval_data,
    out,
    method,
    rule,
    threshold,
    l2,
    afr_gamma,
    split,
    seed,
    max_iter,
    report,
    force,
    batch_size,
    provider,
    output_name,
    head_node,
    embedding,
    as_json,
    **data_args,
) -> None:
    """Re-solve MODEL's head on held-out data and write a drop-in debiased model to --out."""
    import ntonnx
    from cli.render import metrics_table

    options = ntonnx.TuneOptions(
        method=method, rule=rule, threshold=threshold, l2=l2, afr_gamma=afr_gamma, split=split, seed=seed,
        max_iter=max_iter,
    )  # fmt: skip
    result = ntonnx.tune(
        model,
        out,
        data=data,
        activations=activations,
        tune_data=tune_data,
        eval_data=eval_data,
        data_options=_read_data_options(data_args),
        options=options,
        batch_size=batch_size,
        provider=provider,
        output=output_name,
        head_node=head_node,
        embedding=embedding,
        force=force,
        progress=_progress(ctx),
    )
    payload = result.to_dict()
    if report:
        _write_json(report, payload)

    def text() -> str:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        return "\n".join([
            f"wrote {result.output} (method {method}; {len(result.suppressed)} of {result.head.dim} neurons "
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
@_data_options
@_run_options
@_head_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def evaluate(ctx, model, data, batch_size, provider, output_name, head_node, embedding, as_json, **data_args) -> None:
    """Accuracy, per-class and per-group accuracy of MODEL on DATA."""
    import ntonnx
    from cli.render import metrics_table

    result = ntonnx.evaluate(
        model,
        data,
        data_options=_read_data_options(data_args),
        batch_size=batch_size,
        provider=provider,
        output=output_name,
        head_node=head_node,
        embedding=embedding,
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
    from ntonnx.atomic import write_atomic

    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2)), option="--report")


if __name__ == "__main__":
    main()
