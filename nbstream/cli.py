"""The ``nbstream`` command: ``run`` an experiment, ``show`` a predictions folder, ``convert``."""

from __future__ import annotations

import argparse
import copy
import sys
import typing as tp
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "main"]

# ``nbstream run`` with no config: a decoder of 20,484 fMRI-like outputs (fsaverage5 size)
# trained and tested on the CPU, its 1,024 test windows saved under ./nbstream-cache.
DEFAULT_CONFIG: dict[str, tp.Any] = {
    "seed": 0,
    "save_test_predictions": True,
    "infra": {"folder": "nbstream-cache"},
    "trainer": {"accelerator": "cpu", "max_epochs": 1},
    "data": {
        "task": "voxels",
        "n_voxels": 20_484,
        "n_subjects": 4,
        "recordings_per_subject": 3,
        "windows_per_recording": 256,
        "batch_size": 128,
    },
    "model": {"name": "linear"},
}


class _UsageError(Exception):
    """A config the user must fix; printed without a traceback, exit code 2."""


# -- run -------------------------------------------------------------------------------------
def _load_config(args: argparse.Namespace) -> dict[str, tp.Any]:
    import yaml

    if args.config is None:
        config = copy.deepcopy(DEFAULT_CONFIG)
    else:
        try:
            config = yaml.safe_load(Path(args.config).read_text())
        except OSError as exc:
            raise _UsageError(f"cannot read {args.config}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise _UsageError(f"{args.config} is not valid YAML: {exc}") from exc
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise _UsageError(
                f"{args.config} holds a {type(config).__name__}; expected a mapping with keys "
                "like seed, save_test_predictions, infra, trainer, data, model"
            )
    for assignment in args.set:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise _UsageError(f"--set {assignment!r}: expected KEY=VALUE, e.g. data.n_voxels=512")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _UsageError(f"--set {assignment!r}: {part!r} is not a mapping")
            node = child
        node[leaf] = yaml.safe_load(text)
    if args.folder is not None:
        config.setdefault("infra", {})["folder"] = args.folder
    infra = config.get("infra")
    if isinstance(infra, dict) and isinstance(infra.get("folder"), str):
        infra["folder"] = str(Path(infra["folder"]).expanduser().resolve())
    return config


def _validate(config: dict[str, tp.Any], source: str) -> tp.Any:
    import pydantic

    from nbstream.experiment import Experiment

    try:
        return Experiment.model_validate(config)
    except pydantic.ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            got = error.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            lines.append(f"  {where}: {error['msg']}{shown}")
        count = len(lines)
        raise _UsageError(
            f"invalid config {source}: {count} error{'s' * (count > 1)}\n" + "\n".join(lines)
        ) from None


def _quiet() -> None:
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6 calls a torch pytree API that torch deprecates, and suggests more
    # dataloader workers on tiny CPU sets: noise for our users.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _run(args: argparse.Namespace) -> int:
    import time

    config = _load_config(args)
    source = args.config or "(the embedded default)"
    if args.print_config:
        import yaml

        _validate(config, source)
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    experiment = _validate(config, source)
    _quiet()
    infra = experiment.infra
    cached = infra.folder is not None and infra.status() == "completed"
    start = time.perf_counter()
    metrics = experiment.run()
    seconds = time.perf_counter() - start
    where = f" in {infra.uid_folder()}" if infra.folder is not None else ""
    how = "cache hit, returned at once" if cached else f"trained and tested in {seconds:.1f} s"
    print(f"nbstream: {type(experiment.data).__name__} x {type(experiment.model).__name__} ({how})")
    _print_table("test metrics" + where, {k: _number(v) for k, v in metrics.items()})
    if experiment.save_test_predictions:
        preds = experiment.test_predictions()
        folder = infra.uid_folder() / "test_predictions"
        n_bytes = _folder_bytes(folder)
        test_seconds = metrics.get("test_seconds") or float("nan")
        meta = preds["metadata"]
        summary: dict[str, tp.Any] = {
            "folder": folder,
            "windows": len(meta),
            "y_pred": f"{preds['y_pred'].dtype} {tuple(preds['y_pred'].shape)}",
            "y_true": f"{preds['y_true'].dtype} {tuple(preds['y_true'].shape)}",
            "metadata columns": ", ".join(meta.columns),
            "subjects / timelines / groups": " / ".join(
                str(meta[c].nunique()) if c in meta else "-"
                for c in ("subject_id", "timeline", "group")
            ),
            "bytes on disk": f"{n_bytes:,} ({_size(n_bytes)})",
            "test loop seconds": f"{test_seconds:.2f}",
            "write throughput": f"{_size(n_bytes / test_seconds)}/s over the test loop",
        }
        _print_table("test predictions (read back as memmaps)", summary)
    return 0


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_table(title: str, rows: dict[str, tp.Any]) -> None:
    print(title)
    width = max((len(k) for k in rows), default=0)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# -- show ------------------------------------------------------------------------------------
def _show(args: argparse.Namespace) -> int:
    import json
    import warnings

    from nbstream.errors import CorruptPredictionsError, UnsupportedEntryError
    from nbstream.reader import StoppedEarlyWarning, read_predictions
    from nbstream.store import MANIFEST_NAME

    folder = Path(args.folder)
    if not (folder / MANIFEST_NAME).exists() and (folder / "test_predictions").is_dir():
        folder = folder / "test_predictions"  # an experiment's uid folder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoppedEarlyWarning)  # the status is printed
            preds = read_predictions(folder)
    except (OSError, CorruptPredictionsError, UnsupportedEntryError) as exc:
        print(f"nbstream show: error: {exc}", file=sys.stderr)
        return 1
    meta = preds["metadata"]
    if (folder / MANIFEST_NAME).exists():
        manifest = json.loads((folder / MANIFEST_NAME).read_bytes())
        status = manifest.get("status")
        error = manifest.get("error")
        header: dict[str, tp.Any] = {
            "layout": f"nbstream, format version {manifest.get('format_version')}",
            "complete": "yes" if manifest.get("complete") else "no",
            "status": status + (f" ({error})" if error else ""),
        }
        files = {name: info.get("file") for name, info in manifest.get("arrays", {}).items()}
    else:
        header = {"layout": "default collector (exca CacheDict chunks, read into RAM)"}
        files = {}
    header["windows"] = len(meta)
    for name in ("y_pred", "y_true"):
        array = preds[name]
        stored = f"  [{files[name]}]" if name in files else ""
        header[name] = f"{array.dtype} {tuple(array.shape)}{stored}"
    n_bytes = _folder_bytes(folder)
    header["bytes on disk"] = f"{n_bytes:,} ({_size(n_bytes)})"
    _print_table(f"nbstream: {folder}", header)
    _print_table(
        "metadata columns",
        {c: f"{meta[c].dtype}, {meta[c].nunique()} distinct" for c in meta.columns},
    )
    print(f"metadata head ({min(args.head, len(meta))} of {len(meta)} rows)")
    if len(meta):
        for line in meta.head(args.head).to_string().splitlines():
            print(f"  {line}")
    for column in ("timeline", "subject_id", "group"):
        if column in meta and len(meta):
            counts = meta[column].value_counts(sort=False).sort_index()
            shown = ", ".join(f"{k}: {v}" for k, v in counts.head(args.head).items())
            more = f", ... ({len(counts)} in all)" if len(counts) > args.head else ""
            print(f"windows per {column}: {shown}{more}")
    return 0


# -- convert ---------------------------------------------------------------------------------
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


def _bench(bench_args: list[str]) -> int:
    """Hand over to the source checkout's benchmark runner (bench/ is not installed)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "cli.py").is_file():
        raise _UsageError(
            "run from a source checkout: bench/ is not installed with the package "
            "(git clone the repository and pip install -e . there)"
        )
    sys.path.insert(0, str(root))
    from bench.cli import main as bench_main

    return int(bench_main(bench_args))


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run an experiment from a YAML config (default: the embedded CPU task)",
        description="Run an Experiment (train, test, save the test predictions) from a YAML "
        "config with top-level keys seed, save_test_predictions, infra, trainer, data, model. "
        "Without CONFIG, runs the embedded default into ./nbstream-cache with predictions on. "
        "exca caches the result: the same config runs once.",
    )
    run.add_argument("config", nargs="?", default=None, help="YAML config (default: embedded)")
    run.add_argument(
        "--set",
        "-s",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. -s data.n_voxels=512 (repeatable; YAML values)",
    )
    run.add_argument("--folder", default=None, help="the cache folder (overrides infra.folder)")
    run.add_argument(
        "--print-config", action="store_true", help="print the validated config as YAML and exit"
    )
    run.set_defaults(handler=_run)
    show = commands.add_parser(
        "show",
        help="summarize a predictions folder",
        description="Print a predictions folder's manifest (completeness, status, shapes and "
        "dtypes), its metadata head and per-column counts. FOLDER may also be an experiment's "
        "uid folder holding test_predictions/.",
    )
    show.add_argument("folder")
    show.add_argument("--head", type=int, default=5, help="rows and counts shown (default 5)")
    show.set_defaults(handler=_show)
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
    bench = commands.add_parser(
        "bench",
        help="benchmark nbstream side by side with the default collector (source checkout)",
        description="Run the side-by-side benchmark (bench/cli.py of a source checkout); "
        "arguments go to it: --quick, --workload NAME, --sizes N,N, --out FILE, --help.",
        add_help=False,
    )
    bench.set_defaults(handler=lambda args: 0)  # dispatched before parsing, see below
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every later argument belongs to the benchmark runner
        try:
            return _bench(argv[1:])
        except _UsageError as exc:
            print(f"nbstream bench: error: {exc}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except _UsageError as exc:
        print(f"nbstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
