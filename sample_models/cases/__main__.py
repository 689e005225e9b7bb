"""``python -m sample_models.cases build|extract NAME... [--seed S] [--cache DIR] [--acts DIR]``.

``build`` builds (or reuses) a case and prints its ERM accuracies; ``extract`` also writes its
activations and head once under ``--acts``/NAME (see :mod:`sample_models.cases.activations`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sample_models.cases import CASES, DEFAULT_CACHE, ensure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sample_models.cases", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) a case and print its case.json")
    extract = sub.add_parser("extract", help="build (or reuse) a case and save its activations and head")
    extract.add_argument("--acts", type=Path, required=True, help="activations go to ACTS/NAME/")
    for command in (build, extract):
        command.add_argument("names", nargs="+", choices=[*CASES, "all"])
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    names = list(CASES) if "all" in args.names else args.names
    for name in names:
        out = ensure(name, args.seed, args.cache)
        print(json.dumps(json.loads((out / "case.json").read_text())["erm"], indent=1))
        if args.command == "extract":
            from sample_models.cases.activations import export

            export(out, args.acts / name)


if __name__ == "__main__":
    main()
