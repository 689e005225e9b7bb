"""``python -m sample_models.cases build NAME [--seed S] [--cache DIR]``: build a benchmark case."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sample_models.cases import CASES, DEFAULT_CACHE, ensure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sample_models.cases", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) a case and print its case.json")
    build.add_argument("names", nargs="+", choices=[*CASES, "all"])
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    names = list(CASES) if "all" in args.names else args.names
    for name in names:
        out = ensure(name, args.seed, args.cache)
        print(json.dumps(json.loads((out / "case.json").read_text())["erm"], indent=1))


if __name__ == "__main__":
    main()
