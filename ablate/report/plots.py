"""The report's plots: training loss per step, lr sensitivity, memory and throughput bars,
test loss against memory with its lower-left (Pareto) frontier.
matplotlib is imported by each plot, so reading a report's rows needs none of it."""

from __future__ import annotations

import math
import statistics
import textwrap
from pathlib import Path

from .read import Job
from .table import fmt


def wrap(label: str) -> str:
    return textwrap.fill(label, 40)


def plot_losses(path: Path, jobs: list[Job], rows: dict[str, dict]) -> None:
    """Mean training loss over each variant's completed jobs (`rows`: by variant key),
    band from min to max."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = iter(plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors)
    for key, row in rows.items():
        curves = [dict(job.curve) for job in jobs if job.key == key and job.status == "completed"]
        name = row["label"] + (" (baseline)" if row["is_baseline"] else "")
        if not curves:
            ax.plot([], [], " ", label=f"{name}: no completed job, not plotted")
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        by_step = [[c[s] for c in curves] for s in steps]
        color = "black" if row["is_baseline"] else next(colors)
        ax.plot(steps, [statistics.fmean(v) for v in by_step], color=color,
                marker="o" if len(steps) <= 50 else None, markersize=3,
                linewidth=2 if row["is_baseline"] else 1.5, label=f"{name}, n={len(curves)}")
        ax.fill_between(steps, [min(v) for v in by_step], [max(v) for v in by_step],
                        color=color, alpha=0.2, linewidth=0)
    ax.set(xlabel="step", ylabel="training loss",
           title="Training loss per variant: mean over seeds, band = min..max")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sensitivity(path: Path, rows: dict[str, dict], choices: dict[str, dict]) -> None:
    """Validation loss on the grid seed against the peak lr, a line per tuned variant (both
    by variant key); the chosen lr is a star. The axis stops at twice the lowest loss: a run
    above it (a blow-up) is a triangle at the top, a diverged one an x there."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    finite = [loss for c in choices.values() if c for loss in c["grid"].values()
              if math.isfinite(loss)]
    top = min(max(finite), 2 * min(finite)) if finite else 1.0
    colors = iter(plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors)
    for key, row in rows.items():
        choice = choices[key]
        if not choice:
            continue
        color = "black" if row["is_baseline"] else next(colors)
        points = sorted((choice["peak_lrs"][f], loss) for f, loss in choice["grid"].items())
        ok = [(lr, loss) for lr, loss in points if loss <= top]
        name = row["label"] + (" (baseline)" if row["is_baseline"] else "")
        ax.plot([lr for lr, _ in ok], [loss for _, loss in ok], marker="o", color=color,
                label=name)
        for marker, off in (("^", [lr for lr, loss in points if top < loss < math.inf]),
                            ("x", [lr for lr, loss in points if not math.isfinite(loss)])):
            ax.plot(off, [top] * len(off), marker, color=color, markersize=9, clip_on=False)
        if choice["chosen"] is not None:
            ax.plot(choice["peak_lrs"][choice["chosen"]], choice["grid"][choice["chosen"]],
                    "*", color=color, markersize=15)
    ax.set(xscale="log", xlabel="peak learning rate (log)", ylabel="validation loss",
           title="Learning-rate sensitivity (grid seed): ★ chosen, ▲ above the axis, x diverged",
           ylim=(None, top))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path: Path, rows: list[dict], panels: list[tuple[str, str]], title: str) -> None:
    """Horizontal bars (one per variant, in table order) of each `(metric, axis label)`,
    mean with a ±std whisker; a variant with no completed job says so."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False,
                             figsize=(4.5 * len(panels) + 3, 1.2 + 0.5 * len(rows)))
    y = range(len(rows))
    for ax, (key, xlabel) in zip(axes[0], panels):
        means = [row[f"{key}_mean"] for row in rows]
        stds = [0.0 if math.isnan(row[f"{key}_std"]) else row[f"{key}_std"] for row in rows]
        colors = ["dimgray" if row["is_baseline"] else "tab:blue" for row in rows]
        ax.barh(y, [0.0 if math.isnan(m) else m for m in means], xerr=stds, color=colors,
                capsize=3)
        for i, (mean, std) in enumerate(zip(means, stds)):
            ax.text(0 if math.isnan(mean) else mean + std, i, "  no completed job"
                    if math.isnan(mean) else f"  {fmt(mean)}", va="center", fontsize="small")
        ax.set_xlabel(xlabel)
        ax.margins(x=0.3)
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(y), [wrap(row["label"]) + (" (baseline)" if row["is_baseline"]
                                                          else "") for row in rows])
    axes[0][0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def frontier(points: list[tuple[float, float]]) -> list[bool]:
    """Whether each (memory, loss) point is on the lower-left (Pareto) frontier: no other
    point has at most its memory and at most its loss, one of them lower."""
    return [not any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in points)
            for x, y in points]


# Where a point's number goes, in points from the point: right-up first, then around it.
LABEL_OFFSETS = [(5, 3), (5, -11), (-12, 3), (-12, -11), (5, 12), (-12, 12), (5, -20),
                 (-12, -20), (14, -4), (-21, -4)]


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], size: float) -> None:
    """Each text beside its point, at the first of LABEL_OFFSETS whose box (`size` points
    high, 0.6 of that wide a character) overlaps no point's marker and no text already placed
    (the first offset when every one does): the axes' limits must be final."""
    px = ax.figure.dpi / 72  # pixels a point
    centres = ax.transData.transform(points) if points else []
    taken = [(x - 4 * px, y - 4 * px, x + 4 * px, y + 4 * px) for x, y in centres]
    for (x, y), text, point in zip(centres, texts, points):
        width, height = 0.6 * size * len(text) * px, size * px
        boxes = [(x + dx * px, y + dy * px, x + dx * px + width, y + dy * px + height)
                 for dx, dy in LABEL_OFFSETS]
        free = [box for box in boxes if not any(box[0] < t[2] and t[0] < box[2] and
                                                box[1] < t[3] and t[1] < box[3] for t in taken)]
        box = (free or boxes)[0]
        taken.append(box)
        ax.annotate(text, point, xytext=((box[0] - x) / px, (box[1] - y) / px),
                    textcoords="offset points", fontsize=size, fontweight="bold")


def plot_memory_frontier(path: Path, rows: list[dict], kind: str) -> None:
    """Each variant's mean test loss (whiskers: the 95% Student-t interval) against its
    optimizer-state memory and its peak memory (`kind`: how peak memory was measured), log
    axes (ticks at the variants' values, when few and apart), a memory of 0 (a stateless
    optimizer) drawn at a tenth of the panel's smallest other one, its tick "0"; each
    panel's frontier points ringed and joined. Each point is numbered beside it (placed
    clear of the others), the legend on the right names each number by the variant's name
    (a preset's own, else its short label). A variant without a number is named in the
    title."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    panels = [("optimizer_state_gb_mean", "optimizer state, GB (log)"),
              ("peak_memory_gb_mean", f"peak memory, GB ({kind}; log)")]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(14, 5.5), layout="constrained")
    palette = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    colors = {id(row): "black" if row["is_baseline"] else palette[i % len(palette)]
              for i, row in enumerate(rows)}
    numbers = {id(row): str(i + 1) for i, row in enumerate(rows)}
    skipped, labels = set(), []
    for ax, (key, xlabel) in zip(axes, panels):
        shown = [row for row in rows if math.isfinite(row[key]) and row[key] >= 0
                 and math.isfinite(row["test_loss_mean"])]
        skipped |= {row["name"] for row in rows if row not in shown}
        points = [(row[key], row["test_loss_mean"]) for row in shown]
        best = frontier(points)
        floor = min([x for x, _ in points if x > 0] or [1e-5]) / 10
        points = [(x or floor, y) for x, y in points]
        for row, (x, y), on in zip(shown, points, best):
            low, high = row["test_loss_ci_low"], row["test_loss_ci_high"]
            err = [[y - low], [high - y]] if math.isfinite(low) else None
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, markersize=6, color=colors[id(row)])
            if on:
                ax.plot(x, y, "o", markersize=15, markerfacecolor="none", color="red")
        edge = sorted(point for point, on in zip(points, best) if on)
        ax.plot([x for x, _ in edge], [y for _, y in edge], "--", color="red", linewidth=1)
        ax.set_xscale("log")
        xs = sorted({x for x, _ in points})
        # Ticks a fifteenth of the span apart (of a twentieth of a decade at least).
        gap = 10 ** (max(math.log10(xs[-1] / xs[0]) if xs else 0.0, 0.05) / 15)
        ticks = []
        for x in xs:
            ticks += [x] * (not ticks or x > gap * ticks[-1])
        if len(ticks) <= 8:  # each variant's memory read off the axis; else decades only
            ax.set_xticks(ticks, [fmt(x) if x != floor else "0" for x in ticks], rotation=30)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15, y=0.1)
        ax.grid(alpha=0.3, which="both")
        labels.append((ax, points, [numbers[id(row)] for row in shown]))
    axes[0].set_ylabel("test loss (mean, 95% CI)")
    handles = [Line2D([], [], marker="o", linestyle="none", color=colors[id(row)],
                      label=textwrap.shorten(f"{numbers[id(row)]}  {row['name']}"
                                             + (" (baseline)" if row["is_baseline"] else ""),
                                             40, placeholder="...")) for row in rows]
    handles.append(Line2D([], [], linestyle="--", color="red", marker="o", markersize=12,
                          markerfacecolor="none", label="lower-left frontier"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle("Test loss against memory, one point per variant; ringed: the lower-left "
                 "frontier" + (f"\nnot plotted (no number): {', '.join(sorted(skipped))}"
                               if skipped else ""))
    fig.canvas.draw()  # the layout and limits final, so that labels are placed where drawn
    fig.set_layout_engine("none")
    for ax, points, texts in labels:
        place_labels(ax, points, texts, 9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
