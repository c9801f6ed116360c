"""The ``nbstream`` command."""

from __future__ import annotations

import argparse
import sys
import typing as tp

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from nbstream.demo import run_demo

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Lightning 2.6 calls a torch pytree API that torch deprecates: noise for our users.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    summary = run_demo(args.folder, n_windows=args.windows, n_voxels=args.voxels)
    print("nbstream: test predictions saved and read back")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the embedded default: a CPU test loop that saves its predictions"
    )
    run.add_argument("--folder", default="nbstream-cache/test_predictions")
    run.add_argument("--windows", type=int, default=4096)
    run.add_argument("--voxels", type=int, default=20_484)
    run.set_defaults(handler=_run)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
