"""The scaling benchmark's results as Markdown tables, and the goals checked against them."""

from __future__ import annotations

import math
import typing as tp

__all__ = ["GOALS", "check_goals", "render"]

MiB = 1 << 20
GOALS: dict[str, tp.Any] = {
    "overhead_max": 1.05,  # nbstream loop / no-collector loop, on fmri and ctc, at most
    "overhead_workloads": ("fmri", "ctc"),
    "throughput_vs_disk_min": 0.8,  # nbstream I/O-bound rate / write+fsync rate, at least
    "read_rss_growth_max_mib": 64,  # nbstream read-back peak RSS growth, below
}


def _fmt(value: tp.Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    return f"{value * scale:.{digits}f}"


def _metric(value: tp.Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}"


def check_goals(results: dict[str, tp.Any]) -> list[dict[str, tp.Any]]:
    """Each goal with the measured numbers and whether it is reached."""
    goals: list[dict[str, tp.Any]] = []
    loops = results.get("workloads", {})
    over = [
        (w, row["n"], row["nbstream"]["overhead"], row["baseline"]["overhead"])
        for w in GOALS["overhead_workloads"]
        if w in loops
        for row in loops[w]["sizes"]
        if "nbstream" in row and "baseline" in row
    ]
    if over:
        worst = max(over, key=lambda o: o[2])
        goals.append(
            {
                "goal": f"loop overhead <= {GOALS['overhead_max']} on fmri and ctc",
                "measured": "; ".join(
                    f"{w} n={n}: nbstream {a:.3f}, baseline {b:.3f}" for w, n, a, b in over
                ),
                "reached": worst[2] <= GOALS["overhead_max"],
                "worst": worst[2],
                "baseline_best": min(o[3] for o in over),
            }
        )
    thr = results.get("throughput")
    if thr and "nbstream" in thr:
        disk = thr["disk (write+fsync)"]["median_Bps"]
        frac = thr["nbstream"]["median_Bps"] / disk
        goals.append(
            {
                "goal": f"I/O-bound throughput >= {GOALS['throughput_vs_disk_min']} of the disk's",
                "measured": (
                    f"nbstream {thr['nbstream']['median_Bps'] / 1e9:.2f} GB/s = {frac:.2f} of "
                    f"write+fsync {disk / 1e9:.2f} GB/s (baseline "
                    f"{thr['baseline']['median_Bps'] / disk:.2f})"
                    if "baseline" in thr
                    else f"nbstream {frac:.2f} of write+fsync {disk / 1e9:.2f} GB/s"
                ),
                "reached": frac >= GOALS["throughput_vs_disk_min"],
                "fraction": frac,
            }
        )
    rss = [
        (w, row["n"], row["bytes"], row["nbstream"]["read_peak_rss_growth"])
        for w, res in loops.items()
        for row in res["sizes"]
        if "read_peak_rss_growth" in row.get("nbstream", {})
    ]
    if rss:
        worst_rss = max(rss, key=lambda o: o[3])
        limit = GOALS["read_rss_growth_max_mib"]
        goals.append(
            {
                "goal": f"read-back peak RSS growth < {limit} MiB at every size",
                "measured": (
                    f"max {worst_rss[3] / MiB:.1f} MiB ({worst_rss[0]} n={worst_rss[1]}, "
                    f"{worst_rss[2] / 1e9:.2f} GB); largest size "
                    f"{max(rss, key=lambda o: o[2])[3] / MiB:.1f} MiB"
                ),
                "reached": worst_rss[3] < limit * MiB,
                "max_mib": worst_rss[3] / MiB,
            }
        )
    return goals


def render(results: dict[str, tp.Any]) -> str:
    """Markdown: machine, I/O-bound throughput, per-workload table, goals."""
    out: list[str] = []
    add = out.append
    m = results["machine"]
    add(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
        f"{m['disk_free_bytes'] / 1e9:.0f} GB free disk, memcpy "
        f"{results['reference']['memcpy_Bps'] / 1e9:.1f} GB/s; Python {m['python']}, torch "
        f"{m['torch']}, lightning {m['lightning']}, numpy {m['numpy']}; load "
        f"{' '.join(m['loadavg_start'])} at start."
    )
    thr = results.get("throughput")
    if thr:
        disk = thr["disk (write+fsync)"]["median_Bps"]
        cache = thr["page cache (write)"]["median_Bps"]
        add("")
        add(
            f"I/O-bound test loop (pass-through model, fMRI batches, {thr['bytes'] / 1e9:.2f} GB,"
            " median of interleaved repeats):"
        )
        add("")
        add("| writer | GB/s | vs disk (write+fsync) | vs page cache (write) |")
        add("|---|---:|---:|---:|")
        for variant, res in thr.items():
            if isinstance(res, dict):
                rate = res["median_Bps"]
                add(f"| {variant} | {rate / 1e9:.2f} | {rate / disk:.2f} | {rate / cache:.2f} |")
    add("")
    add(
        "Real `Trainer.test` loops with model compute (loop/none: loop wall time with the "
        "collector over the same loop without one; hook: main-thread `on_test_batch_end`; "
        "end: `on_test_epoch_end`; read: the collector's own reader in a fresh process, peak "
        "RSS growth; metric computed from the read-back arrays):"
    )
    add("")
    add(
        "| workload | n | GB | collector | loop s | loop/none | hook med ms | hook p99 ms | "
        "end ms | read s | read peak RSS MiB | metric | metric s | disk MB |"
    )
    add("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wname, res in results.get("workloads", {}).items():
        for row in res["sizes"]:
            gb = row["bytes"] / 1e9
            none = row["none"]
            add(
                f"| {wname} | {row['n']} | {gb:.2f} | (none) | {none['loop_s']:.2f} | 1 | "
                "| | | | | | | |"
            )
            for name in ("baseline", "nbstream"):
                if name not in row:
                    continue
                r = row[name]
                skipped = r.get("read_skipped")
                add(
                    f"| {wname} | {row['n']} | {gb:.2f} | {name} | {r['loop_s']:.2f} | "
                    f"{r['overhead']:.3f} | {_fmt(r['hook_median_s'], 1e3, 3)} | "
                    f"{_fmt(r['hook_p99_s'], 1e3, 3)} | {_fmt(r['epoch_end_s'], 1e3, 1)} | "
                    f"{'skipped' if skipped else _fmt(r.get('read_s'), 1, 3)} | "
                    f"{'skipped' if skipped else _fmt(r.get('read_peak_rss_growth'), 1 / MiB, 1)}"
                    f" | {_metric(r.get('metric'))} | {_fmt(r.get('metric_s'), 1, 2)} | "
                    f"{r['disk_bytes'] / 1e6:.1f} |"
                )
    notes = []
    for wname, res in results.get("workloads", {}).items():
        notes.append(
            f"{wname}: y_pred {res['pred']}, y_true {res['true']}, batches of "
            f"{res['batch_size']}, model forward {res['compute_per_batch_s'] * 1e3:.1f} ms/batch "
            f"(depth {res['model_depth']}), metric {res['metric']}"
        )
        for row in res["sizes"]:
            if row.get("metric_equal") is False:
                notes.append(f"{wname} n={row['n']}: METRICS DIFFER between collectors")
            for name in ("baseline", "nbstream"):
                if row.get(name, {}).get("read_skipped"):
                    notes.append(
                        f"{wname} n={row['n']}: {name} read skipped: {row[name]['read_skipped']}"
                    )
    add("")
    out.extend(f"- {n}" for n in notes)
    goals = check_goals(results)
    if goals:
        add("")
        add("Goals:")
        add("")
        for g in goals:
            add(f"- {'REACHED' if g['reached'] else 'NOT reached'}: {g['goal']} — {g['measured']}")
    return "\n".join(out)
