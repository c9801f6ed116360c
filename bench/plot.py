"""One PNG of the scaling results: cost against test-set size for both collectors."""

from __future__ import annotations

import typing as tp
from pathlib import Path

__all__ = ["plot"]

MiB = 1 << 20
_STYLE = {"baseline": ("o", "--"), "nbstream": ("s", "-")}  # marker, line per collector


def plot(results: dict[str, tp.Any], path: Path) -> Path:
    """Loop overhead, main-thread hook latency and read-back peak RSS against GB on disk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results["workloads"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    ax_loop, ax_hook, ax_rss = axes
    for k, (wname, res) in enumerate(workloads.items()):
        color = f"C{k}"  # one colour per workload
        sizes = res["sizes"]
        gb = [row["bytes"] / 1e9 for row in sizes]
        for name, (marker, line) in _STYLE.items():
            if not all(name in row for row in sizes):
                continue
            kw = {"color": color, "marker": marker, "linestyle": line, "alpha": 0.85}
            label = f"{name} {wname}"
            ax_loop.plot(gb, [row[name]["overhead"] for row in sizes], label=label, **kw)
            ax_hook.plot(gb, [row[name]["hook_median_s"] * 1e3 for row in sizes], **kw)
            pts = [
                (g, row[name]["read_peak_rss_growth"] / MiB)
                for g, row in zip(gb, sizes, strict=True)
                if "read_peak_rss_growth" in row[name]
            ]
            if pts:
                ax_rss.plot(*zip(*pts, strict=True), **kw)
            for g, row in zip(gb, sizes, strict=True):
                if row[name].get("read_skipped"):
                    ax_rss.annotate("skipped", (g, 1), color=color, fontsize=8, ha="center")
    ax_loop.axhline(1.05, color="grey", linewidth=0.8, linestyle=":")
    ax_loop.set(
        xscale="log",
        xlabel="predictions on disk (GB)",
        ylabel="loop wall time / loop without collector",
        title="Trainer.test overhead (goal ≤ 1.05)",
    )
    ax_hook.set(
        xscale="log",
        yscale="log",
        xlabel="predictions on disk (GB)",
        ylabel="ms per batch (median)",
        title="main-thread on_test_batch_end",
    )
    ax_rss.axhline(64, color="grey", linewidth=0.8, linestyle=":")
    ax_rss.set(
        xscale="log",
        yscale="log",
        xlabel="predictions on disk (GB)",
        ylabel="MiB",
        title="read-back peak RSS growth (goal < 64 MiB)",
    )
    ax_loop.legend(fontsize=7, ncol=2, title="dashed: baseline, solid: nbstream", title_fontsize=7)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
