"""``bench``: nbstream and the default collector side by side, in real test loops, by size.

Run from a source checkout: ``python -m bench.cli [--workload fmri ...] [--quick]
[--sizes 500,2500] [--out results.json] [--plot docs/benchmarks.png]``. It prints Markdown
tables (I/O-bound write throughput against this machine's disk, then per workload and size:
loop overhead, hook latency, read-back time and RSS, a metric, bytes on disk) and the goals,
and writes every number as JSON. ``--quick`` runs tiny sizes once (well under a minute).
See :mod:`bench.scaling` for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import typing as tp
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `nbstream` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scaling.json"
_NOISE = (
    r".*does not have many workers.*",
    r".*LeafSpec.*",
    r".*GPU available but not used.*",
    r".*litlogger.*",
)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--sizes takes window counts separated by commas (e.g. 500,2500), got {text!r}"
        ) from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs positive window counts, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    from bench.workloads import SCALING_WORKLOADS

    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workload",
        action="append",
        choices=list(SCALING_WORKLOADS),
        help="run only this workload (repeatable); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (< 60 s)")
    parser.add_argument(
        "--sizes", type=_sizes, help="window counts for every selected workload, e.g. 500,2500"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per size")
    parser.add_argument(
        "--throughput-gb",
        type=float,
        default=3.0,
        help="bytes of the I/O-bound throughput loop (0: skip it)",
    )
    parser.add_argument(
        "--baseline-read-limit-gb",
        type=float,
        default=12.0,
        help="skip the default reader above this size (it holds everything in RAM)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results")
    parser.add_argument("--plot", type=Path, default=None, help="also draw this PNG")
    parser.add_argument("--scratch", type=Path, default=None, help="where runs write")
    return parser


def main(argv: tp.Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write JSON (and a plot); return the exit code."""
    args = _parser().parse_args(argv)
    import torch

    from bench.report import render
    from bench.scaling import (
        COLLECTORS,
        machine_info,
        measure_throughput,
        measure_workload,
        reference_bandwidths,
    )
    from bench.workloads import SCALING_WORKLOADS, nbstream_available

    if args.quick:
        args.repeats = 1
        args.throughput_gb = min(args.throughput_gb, 0.05)
    names = [n for n in COLLECTORS if n != "nbstream" or nbstream_available()]
    selected = args.workload or list(SCALING_WORKLOADS)
    # The model's compute stands for an accelerator: the main thread waits on one core while
    # the other stays free for the writer, as it would next to a GPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    t_start = time.perf_counter()
    try:
        with (
            warnings.catch_warnings(),
            tempfile.TemporaryDirectory(prefix="nbstream-bench-", dir=args.scratch) as tmp,
        ):
            for pattern in _NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            scratch = Path(tmp)
            results: dict[str, tp.Any] = {
                "machine": machine_info(scratch),
                "reference": reference_bandwidths(),
                "config": {
                    **{k: v for k, v in vars(args).items() if k not in {"out", "plot", "scratch"}},
                    "workloads": selected,
                    "collectors": names,
                    "command": "bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                },
                "workloads": {},
            }
            if args.throughput_gb > 0:
                print(f"I/O-bound throughput, {args.throughput_gb} GB ...", flush=True)
                results["throughput"] = measure_throughput(
                    names, scratch, args.throughput_gb * 1e9, max(1, args.repeats)
                )
            for wname in selected:
                workload = SCALING_WORKLOADS[wname]
                sizes = args.sizes or (workload.quick_sizes if args.quick else workload.sizes)
                print(f"{wname}: sizes {sizes} ...", flush=True)
                results["workloads"][wname] = measure_workload(
                    workload,
                    sizes,
                    names,
                    scratch,
                    repeats=max(1, args.repeats),
                    baseline_read_limit=args.baseline_read_limit_gb * 1e9,
                )
            results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        torch.set_num_threads(threads)
    results["seconds"] = time.perf_counter() - t_start
    print()
    print(render(results))
    print(f"\ntotal {results['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    if args.plot is not None:
        from bench.plot import plot

        print(f"wrote {plot(results, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
