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


def _convert(args: argparse.Namespace) -> int:
    import time

    from nbstream.convert import convert_legacy
    from nbstream.errors import CorruptPredictionsError, UnsupportedEntryError
    from nbstream.reader import read_predictions

    start = time.perf_counter()
    try:
        dst = convert_legacy(args.src, args.dst, progress=args.progress)
    except (OSError, UnsupportedEntryError, CorruptPredictionsError, ValueError) as exc:
        print(f"nbstream convert: error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    out = read_predictions(dst)  # memmaps: costs no RAM
    arrays = ", ".join(
        f"{name} {out[name].dtype} {tuple(out[name].shape)}" for name in ("y_pred", "y_true")
    )
    n_bytes = out["y_pred"].nbytes + out["y_true"].nbytes
    print(
        f"nbstream: converted {args.src} -> {dst}: {len(out['metadata'])} windows, {arrays}, "
        f"{_size(n_bytes)} in {seconds:.2f} s"
    )
    return 0


def _size(n_bytes: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as disk sizes are quoted)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


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
    convert = commands.add_parser(
        "convert",
        help="rewrite a folder written by the default collector in nbstream's layout",
        description="Rewrite a folder written by the default collector (exca CacheDict) in "
        "nbstream's layout, chunk by chunk (RAM stays about one 64 MiB block). The source is "
        "left untouched; the result appears complete or not at all.",
    )
    convert.add_argument("src", help="the default collector's folder")
    convert.add_argument(
        "dst", nargs="?", default=None, help="the new folder (default: <SRC>-nbstream, next to SRC)"
    )
    bar = convert.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: only when stderr is a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    convert.set_defaults(handler=_convert)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
