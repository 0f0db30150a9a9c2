"""What ``edgecvm eval`` prints and writes: Markdown tables, a JSON document and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgecvm.errors import BadInputError
from edgecvm.eval.few_shot_curve import CurvePoint
from edgecvm.eval.harness import MethodResult
from edgecvm.formats.integrity import atomic_write_bytes


def _pct(value: object) -> str:
    return "–" if not isinstance(value, float) or math.isnan(value) else f"{100 * value:.1f}"


def table(results: Sequence[MethodResult], scenario: str) -> str:
    """Markdown table, one row per method (percentages; '–' where a figure does not apply)."""
    if scenario == "zero-shot":
        head = "| method | accuracy, dataset concepts | accuracy, whole anchor file | concepts |\n|---|---:|---:|---:|"
        rows = [f"| {r.name} | {_pct(r.metrics['dataset_vocabulary'])} | {_pct(r.metrics['anchor_vocabulary'])} | "
                f"{r.metrics['dataset_concepts']} / {r.metrics['anchor_concepts']} |" for r in results]
        return "\n".join([head, *rows])
    head = ("| method | final acc. | avg. incremental | forgetting | zero-shot on untaught | learn time (s) | "
            "peak traced (MB) | state (MB) | device plan (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for r in results:
        m = r.metrics
        zero_shot = r.zero_shot.get("unseen_mean") if r.zero_shot else None
        plan = "–" if r.memory_plan_mb is None else f"{r.memory_plan_mb:.0f}{'' if r.fits_budget else ' (over!)'}"
        rows.append(f"| {r.name} | {_pct(m['final_average'])} | {_pct(m['average_incremental'])} | "
                    f"{_pct(m['forgetting'])} | {_pct(zero_shot)} | {r.train_seconds:.1f} | {r.peak_mb:.1f} | "
                    f"{r.state_mb:.1f} | {plan} |")
    return "\n".join([head, *rows])


def write_json(path: Path, document: Mapping[str, object]) -> None:
    """NaN becomes null so any JSON reader accepts the file."""
    atomic_write_bytes(path, (json.dumps(_clean(document), indent=2) + "\n").encode())


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the ``plots`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInputError("--plot needs matplotlib: pip install edgecvm[plots]") from None
    return plt


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str) -> None:
    """Title and grid, then the figure written to ``path`` (its folder created) and closed."""
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(path: Path, results: Sequence[MethodResult], title: str) -> None:
    """Accuracy on all classes seen so far against tasks seen (class-incremental, few-shot) or bars (zero-shot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    if results and "accuracy_after_task" not in results[0].metrics:
        ax.bar([r.name for r in results], [100 * r.metrics["dataset_vocabulary"] for r in results])
        ax.set_ylabel("zero-shot accuracy (%)")
    else:
        for r in results:
            curve = [100 * v if v is not None and not math.isnan(v) else math.nan
                     for v in r.metrics["accuracy_after_task"]]
            tasks = range(1, len(curve) + 1)
            if all(math.isnan(v) for v in curve[:-1]):  # joint: measured once, at the end
                ax.axhline(curve[-1], linestyle="--", color="grey", label=f"{r.name} (upper bound)")
            else:
                ax.plot(tasks, curve, marker="o", markersize=3, label=r.name,
                        linewidth=2.5 if r.name.startswith("cvm") else 1.2)
        ax.set_xlabel("tasks seen")
        ax.set_ylabel("accuracy on all classes seen so far (%)")
        ax.legend(fontsize=8)
    _save(plt, fig, ax, path, title)


def curve_table(points: Sequence[CurvePoint]) -> str:
    """Markdown: one row per method, its final accuracy (%) at each K."""
    head = "| method | " + " | ".join(f"K = {p.shots}" for p in points) + " |"
    rule = "|---|" + "---:|" * len(points)
    methods = [r.name for r in points[0].results] if points else []
    rows = [f"| {name} | " + " | ".join(_pct(_final(p, name)) for p in points) + " |" for name in methods]
    return "\n".join([head, rule, *rows])


def _final(point: CurvePoint, method: str) -> float:
    result = next(r for r in point.results if r.name == method)
    value = result.metrics["final_average"]
    return value if isinstance(value, float) else math.nan


def plot_curve(path: Path, points: Sequence[CurvePoint], title: str) -> None:
    """Final accuracy against K (log axis), one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    shots = [p.shots for p in points]
    for result in points[0].results if points else []:
        accuracy = [100 * _final(p, result.name) for p in points]
        ax.plot(shots, accuracy, marker="o", markersize=4, label=result.name,
                linewidth=2.5 if result.name.startswith("cvm") else 1.2,
                linestyle="--" if result.name == "joint" else "-")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("training images per class (K)")
    ax.set_ylabel("final accuracy on all classes (%)")
    ax.legend(fontsize=8)
    _save(plt, fig, ax, path, title)
