"""Matplotlib (Agg) figures for evaluation results: method bar charts and predicted-vs-real scatters."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100, layout: bool = True) -> Path:
    """Lay out (``tight_layout``, unless ``layout=False``: the caller placed the axes), write
    (creating the folder) and close a figure; returns the path."""
    plt = _plt()
    path = Path(path)
    if layout:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def bar_chart(summary: pd.DataFrame, path, metrics=("pearson", "weighted_tau", "regret@1"), title: str = "") -> Path:
    """One panel per metric: mean ± std (error bar) per method; n/a methods are left out of the bars
    and named in the panel's footnote."""
    plt = _plt()
    ok = summary[summary["n"] > 0] if "n" in summary.columns else summary
    na = [m for m in summary["method"] if m not in set(ok["method"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.35 * max(len(ok), 4) + 1.6),
                             squeeze=False)
    y = np.arange(len(ok))
    palette = {"recommender": "tab:blue", "nested": "tab:green"}
    colors = [palette.get(k, "tab:gray") for k in ok.get("kind", ["baseline"] * len(ok))]
    for ax, m in zip(axes[0], metrics):
        ax.barh(y, ok[f"{m}_mean"].fillna(0), xerr=ok[f"{m}_std"].fillna(0), color=colors, alpha=0.85,
                error_kw={"elinewidth": 0.8})
        ax.set_yticks(y, ok["method"], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(m + (" (lower is better)" if m.startswith("regret") else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    if na:
        fig.text(0.01, 0.005, "n/a: " + ", ".join(na), fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def scatter_grid(predictions: pd.DataFrame, path, title: str = "") -> Path:
    """Predicted vs real accuracy, one panel per held-out dataset (all folds of that dataset)."""
    plt = _plt()
    datasets = sorted(predictions["dataset"].unique())
    n = max(len(datasets), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    groups = dict(tuple(predictions.groupby("dataset", sort=True)))
    for ax, ds in zip(axes.ravel(), datasets):
        sub = groups[ds]
        ax.scatter(sub["predicted"].to_numpy(), sub["real"].to_numpy(), s=9, alpha=0.7)
        ax.set_title(ds, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("predicted", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("real", fontsize=7)
    for ax in axes.ravel()[len(datasets):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins instead of tight_layout, which measures every label of every panel (a third
    # of the time of a 12-panel grid; evaluate draws one grid per method)
    top = 1 - (0.5 if title else 0.3) / (2.9 * rows)
    fig.subplots_adjust(left=0.55 / (3.2 * cols), right=0.98, bottom=0.45 / (2.9 * rows), top=top,
                        wspace=0.3, hspace=0.35)
    return save_figure(fig, path, dpi=100, layout=False)


def importance_chart(importances: pd.DataFrame, path, title: str = "", top: int = 20) -> Path:
    """Horizontal bars of the ``top`` largest |importance| features."""
    plt = _plt()
    df = importances.assign(a=importances["importance"].abs()).sort_values("a", ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(df) + 1.2))
    ax.barh(np.arange(len(df)), df["importance"], color="tab:green")
    ax.set_yticks(np.arange(len(df)), df["feature"], fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title or "feature importance", fontsize=9)
    return save_figure(fig, path, dpi=100)
