"""Load stored benchmark results and plot them (the labs and ``python -m attnlib.bench`` use these).

Results measured on real GPUs ship with the package under ``attnlib/bench/results/``
as ``<suite>*.json`` (written by ``python -m attnlib.bench``). The file
``h200-baselines-reference.json`` is different: the course staff's measurements of
torch's SDPA backends, FlexAttention and a plain Triton forward kernel, kept as the
reference to beat; it holds no attnlib results. ``results/runs/<gpu>-<date>/`` keeps what else
a run brought back (its log, the ceilings measured first, follow-up probes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REFERENCE_FILE = "h200-baselines-reference.json"

__all__ = ["RESULTS_DIR", "load_results", "load_committed", "load_run_file", "load_reference_baselines",
           "plot_backward", "plot_flash", "plot_ladder", "plot_reference_baselines", "plot_rows", "plot_suite"]

_STYLE = {"attnlib_flash": ("C3", "o", "-"), "attnlib_flash_portable": ("C6", "o", ":"),
          "attnlib_flash_experimental": ("C7", "*", "-."),
          "sdpa_cudnn": ("C0", "s", "--"), "sdpa_flash": ("C1", "^", "--"), "sdpa_efficient": ("C2", "v", "--"),
          "flex": ("C4", "D", ":"), "plain_triton_fwd": ("C5", "x", ":")}


def load_results(suite: str, directory: Optional[Path] = None) -> list[dict]:
    """Every stored GPU result of ``suite`` (files ``<suite>*.json``), oldest first; [] if none exist.

    From ``directory``, else from the folder named by the environment variable
    ``ATTNLIB_BENCH_RESULTS`` (to look at a run's output in the labs before committing it),
    else from :data:`RESULTS_DIR`.
    """
    directory = directory if directory is not None else os.environ.get("ATTNLIB_BENCH_RESULTS") or RESULTS_DIR
    directory = Path(directory)
    found = []
    for path in sorted(directory.glob(f"{suite}*.json")):
        if path.name == REFERENCE_FILE:
            continue
        data = json.loads(path.read_text())
        data.setdefault("file", path.name)
        found.append(data)
    return sorted(found, key=lambda d: d.get("machine", {}).get("date_utc", ""))


def load_committed(suite: str, run: str) -> dict:
    """The committed result file ``<suite>-<run>.json`` (for example ``load_committed("flash", "h200-2026-11-28")``).

    Always from :data:`RESULTS_DIR`, whatever ``ATTNLIB_BENCH_RESULTS`` says: the book's text
    about a particular run reads that run, not the latest one.
    """
    path = RESULTS_DIR / f"{suite}-{run}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no committed result {path.name} in {RESULTS_DIR}")
    data = json.loads(path.read_text())
    data.setdefault("file", path.name)
    return data


def load_run_file(run: str, name: str) -> dict:
    """A JSON file a run brought back besides the suites' results: ``results/runs/<run>/<name>``."""
    path = RESULTS_DIR / "runs" / run / name
    if not path.is_file():
        raise FileNotFoundError(f"no file {name} stored for the run {run} in {path.parent}")
    return json.loads(path.read_text())


def load_reference_baselines() -> dict:
    """The course staff's H200 measurements of SDPA/flex/plain Triton (not attnlib's kernels)."""
    return json.loads((RESULTS_DIR / REFERENCE_FILE).read_text())


def _panels(plt, ncols: int, nrows: int = 1):
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), squeeze=False, sharey="row")
    return fig, axes


def _draw(ax, series: dict, title: str, ylabel: Optional[str]):
    for impl, points in sorted(series.items()):
        points = sorted(p for p in points if p[1] is not None)
        if not points:
            continue
        color, marker, line = _STYLE.get(impl, (None, ".", "-"))
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, linestyle=line, color=color,
                label=impl)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length N")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def plot_flash(results: dict):
    """TFLOP/s against N: columns (head dim, causal), rows forward and forward+backward."""
    import matplotlib.pyplot as plt

    rows = results["rows"]
    panels = sorted({(r["head_dim"], r["causal"]) for r in rows})
    fig, axes = _panels(plt, max(len(panels), 1), 2)
    for col, (d, causal) in enumerate(panels):
        for row_i, mode in enumerate(("fwd", "fwd_bwd")):
            series: dict = {}
            for r in rows:
                if (r["head_dim"], r["causal"], r["mode"]) == (d, causal, mode):
                    series.setdefault(r["impl"], []).append((r["seq_len"], r["tflops"]))
            label = "forward" if mode == "fwd" else "forward+backward"
            _draw(axes[row_i][col], series, f"{label}, D={d}, {'causal' if causal else 'full'}",
                  "TFLOP/s" if col == 0 else None)
    machine = results.get("machine", {})
    fig.suptitle(f"FlashAttention, bf16, {machine.get('gpu', '?')} (torch {machine.get('torch', '?')}, "
                 f"triton {machine.get('triton', '?')}, {machine.get('date_utc', '?')[:10]})", fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ladder(results: dict):
    """The forward step by step (``results["ladder"]`` of the flash suite): TFLOP/s bars per (N, causal)."""
    import matplotlib.pyplot as plt

    ladder = results.get("ladder") or []
    panels = sorted({(r["seq_len"], r["causal"]) for r in ladder})
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.6 * max(len(panels), 1), 3.4), squeeze=False,
                             sharey=True)
    for ax, (n, causal) in zip(axes[0], panels):
        rows = [r for r in ladder if (r["seq_len"], r["causal"]) == (n, causal)]
        names = [r["step"] for r in rows]
        values = [r["tflops"] or 0.0 for r in rows]
        colors = ["C0" if name.startswith("SDPA") else "C3" for name in names]
        ax.barh(range(len(rows)), values, color=colors)
        for i, r in enumerate(rows):
            if r["tflops"] is None:
                ax.text(0, i, "  did not run", va="center", fontsize=7)
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.invert_yaxis()  # the steps read top to bottom
        ax.set_xlabel("TFLOP/s")
        ax.set_title(f"D={rows[0]['head_dim']}, N={n}, {'causal' if causal else 'full'}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    machine = results.get("machine", {})
    fig.suptitle(f"The forward step by step, bf16, {machine.get('gpu', '?')} (triton {machine.get('triton', '?')})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_backward(results: dict):
    """The backward kernel by kernel (``results["backward"]`` of the flash suite): ms bars per (N, causal).

    Red: attnlib's kernels with each candidate tile and autotuned; dark red: its whole backward;
    blue: SDPA's backward alone. A bar's label carries its TFLOP/s where it has one.
    """
    import matplotlib.pyplot as plt

    rows = results.get("backward") or []
    panels = sorted({(r["seq_len"], r["causal"]) for r in rows})
    bars = max([sum((r["seq_len"], r["causal"]) == p for r in rows) for p in panels] or [1])
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.6 * max(len(panels), 1), 0.22 * bars + 1.2),
                             squeeze=False, sharey=True)
    for ax, (n, causal) in zip(axes[0], panels):
        mine = [r for r in rows if (r["seq_len"], r["causal"]) == (n, causal)]
        names = [f"{r['part']} {r['config']}".replace(" -", "") for r in mine]
        colors = ["C0" if r["part"].startswith("SDPA") else "darkred" if r["part"] == "attnlib backward" else "C3"
                  for r in mine]
        ax.barh(range(len(mine)), [r["ms"] or 0.0 for r in mine], color=colors)
        for i, r in enumerate(mine):
            text = "  did not run" if r["ms"] is None else f"  {r['tflops']:.0f} TFLOP/s" if r["tflops"] else ""
            ax.text(r["ms"] or 0.0, i, text, va="center", fontsize=6)
        ax.set_yticks(range(len(mine)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms (lower is faster)")
        ax.set_title(f"backward, D={mine[0]['head_dim']}, N={n}, {'causal' if causal else 'full'}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    machine = results.get("machine", {})
    fig.suptitle(f"Where the backward's time goes, bf16, {machine.get('gpu', '?')} "
                 f"(triton {machine.get('triton', '?')})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_reference_baselines(reference: Optional[dict] = None):
    """The staff's H200 baselines (SDPA backends, flex, plain Triton forward) as TFLOP/s against N."""
    import matplotlib.pyplot as plt

    reference = reference if reference is not None else load_reference_baselines()
    rows = [r for r in reference["rows"] if r["valid"]]
    panels = sorted({(r["head_dim"], r["causal"]) for r in rows})
    fig, axes = _panels(plt, len(panels), 2)
    for col, (d, causal) in enumerate(panels):
        for row_i, key in enumerate(("fwd_tflops", "fwd_bwd_tflops")):
            series: dict = {}
            for r in rows:
                if (r["head_dim"], r["causal"]) == (d, causal):
                    series.setdefault(r["impl"], []).append((r["seq_len"], r[key]))
            label = "forward" if key == "fwd_tflops" else "forward+backward"
            _draw(axes[row_i][col], series, f"{label}, D={d}, {'causal' if causal else 'full'}",
                  "TFLOP/s" if col == 0 else None)
    fig.suptitle(f"Reference baselines (course staff), {reference['gpu']}, torch {reference['torch']}, "
                 f"{reference['date']}: not attnlib results", fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


_X_KEYS = ("seq_len", "kv_len", "lk", "n", "length")
_Y_KEYS = ("tflops", "tb_s", "gb_s", "ms")


def plot_rows(results: dict, title: str = ""):
    """A generic plot for any suite whose results hold ``rows`` of dicts with ``impl`` and numbers."""
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("rows", []) if isinstance(r, dict)]
    x_key = next((k for k in _X_KEYS if any(k in r for r in rows)), None)
    y_key = next((k for k in _Y_KEYS if any(r.get(k) is not None for r in rows)), None)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if x_key and y_key:
        series: dict = {}
        for r in rows:
            if r.get(x_key) is not None and r.get(y_key) is not None:
                label = str(r.get("impl", "result")) + (f" ({r['mode']})" if "mode" in r else "")
                series.setdefault(label, []).append((r[x_key], r[y_key]))
        _draw(ax, series, title, y_key)
        ax.set_xlabel(x_key)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no plottable rows", ha="center", va="center")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_suite(suite: str, results: dict, path) -> None:
    """Write ``results`` of ``suite`` as a PNG: the suite's own ``plot`` if it has one, else a generic plot."""
    import importlib

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    module = importlib.import_module(f"attnlib.bench.{suite}")
    if suite == "flash":
        fig = plot_flash(results)
    elif hasattr(module, "plot"):
        fig = module.plot(results)
    else:
        fig = plot_rows(results, title=suite)
    fig.savefig(path, dpi=120)
    plt.close(fig)
