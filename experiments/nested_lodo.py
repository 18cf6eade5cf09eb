"""Nested leave-one-dataset-out: choose the recommender configuration without looking at
the held-out dataset (``python -m experiments.nested_lodo``).

``python -m recommender evaluate --select nested`` is the general form (any source and
protocol, inner folds of the engine's ``kfold`` protocol); this command is the exact LODO
variant for TransferGraph-image, with post-hoc score blends and two optimistic bounds. It
fits on the same training frames and scores with the same code as ``evaluate``.

Plain LODO (``experiments.quick_lodo``, ``experiments.report``) reports every configuration
side by side; picking the best row afterwards uses the held-out results to choose. This
command measures what a user would get if the choice itself were part of the method:

* **outer loop**: each dataset ``o`` is held out in turn;
* **inner loop**: on the remaining datasets only, each dataset ``i != o`` is held out in
  turn, every candidate configuration is fitted without ``o`` and ``i`` and scored on
  ``i``; the candidate with the lowest inner mean of the selection metric (regret@1 by
  default; ties go to the higher inner Pearson, then to the earlier candidate) is chosen;
* the chosen candidate is fitted on every dataset but ``o`` and scored on ``o``.

It prints, per held-out dataset, the chosen candidate and its outer metrics, and three
summary rows:

``nested``  the honest figure (selection never saw the held-out dataset);
``best-fixed (optimistic)``  the single candidate with the best *outer* mean -- chosen by
            looking at the held-out results, so an upper bound for any fixed choice;
``per-dataset oracle (optimistic)``  for every held-out dataset the best candidate for it;
            no method that picks from these candidates can do better.

Candidates are the learned recommenders (``lr``, ``lgbm``, ``lgbm-rank``; d,m and d,m,s
features), the ``model-mean`` baseline and post-hoc blends of ``lr`` d,m with an MS score:
``z(pred) + w * z(score)`` within the held-out dataset (a missing score counts as the
dataset's mean, z = 0). ``fm`` is left out by default: a torch FM fit takes seconds, and the
nested loop needs 78 fits per configuration on 12 datasets (``--with-fm`` adds it).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from experiments.baselines import model_mean, ms_scores
from experiments.plots import _plt, save_figure
from experiments.quick_lodo import DEFAULT_DATA, load_tg_image
from recommender.metrics import METRICS, score_dataset
from recommender.protocols import store_aliases, twins_in
from recommender.registry import create_recommender


@dataclass(frozen=True)
class Candidate:
    """One configuration the nested selection may choose.

    ``recommender`` is a registry name, or ``"model-mean"`` for the collaborative baseline
    (a model's mean accuracy over the training datasets). ``blend`` is ``(ms_method, w)``:
    the final score is ``z(prediction) + w * z(ms score)`` within the dataset.
    """

    label: str
    recommender: str
    features: str = "d,m"
    blend: tuple[str, float] | None = None
    params: tuple = field(default_factory=tuple)

    @property
    def base(self) -> tuple:
        """What has to be fitted (blends of one base share its fits)."""
        return (self.recommender, self.features, self.params)


def default_candidates(with_fm: bool = False, score_methods=("logme", "reg_hscore"),
                       blend_weights=(0.2, 0.5)) -> list[Candidate]:
    out = []
    names = ["lr", "lgbm", "lgbm-rank"] + (["fm"] if with_fm else [])
    for name in names:
        for feats in ("d,m", "d,m,s"):
            out.append(Candidate(f"{name}[{feats}]", name, feats))
    out.append(Candidate("model-mean", "model-mean", ""))
    for method in score_methods:
        for w in blend_weights:
            out.append(Candidate(f"lr[d,m]+{w}*z({method})", "lr", "d,m", blend=(method, w)))
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    z = np.zeros_like(x)
    if ok.sum() >= 2 and np.std(x[ok]) > 0:
        z[ok] = (x[ok] - x[ok].mean()) / x[ok].std()
    return z


class _Fits:
    """Fits each (base, excluded datasets) once and serves its predictions for any dataset."""

    def __init__(self, history, random_state: int = 0):
        self.history = history
        self.random_state = random_state
        self._all_ds = sorted(history.targets["dataset"].unique())
        self._aliases = store_aliases(history)
        self._cache: dict = {}
        self.n_fits = 0
        self.fit_seconds = 0.0

    def predict(self, base: tuple, excluded: frozenset, dataset: str) -> pd.DataFrame:
        name, feats, params = base
        key = (base, excluded)
        truth = self.history.targets[self.history.targets["dataset"] == dataset]
        pairs = truth[["model", "dataset"]]
        # the fold's frame, as the engine's lodo builds it: the excluded datasets and their twins
        train = self.history.drop_targets(datasets=twins_in(sorted(excluded), self._all_ds, self._aliases))
        if name == "model-mean":
            pred = model_mean(train, pairs, train)  # NaN for unseen models: ranked last by score_dataset
        else:
            rec = self._cache.get(key)
            if rec is None:
                t0 = time.perf_counter()
                rec = create_recommender(name, features=feats, random_state=self.random_state, **dict(params))
                rec.fit(train)
                self.fit_seconds += time.perf_counter() - t0
                self.n_fits += 1
                self._cache[key] = rec
            pred = rec.predict(pairs, history=train)
        return pd.DataFrame({"model": pairs["model"].to_numpy(), "dataset": dataset, "pred": pred,
                             "value": truth["value"].to_numpy()})

    def forget(self, excluded: frozenset) -> None:
        for key in [k for k in self._cache if k[1] == excluded]:
            del self._cache[key]


def _final_scores(cand: Candidate, frame: pd.DataFrame, history) -> np.ndarray:
    """The candidate's ranking score for one dataset's ``frame`` (columns model, dataset, pred)."""
    if cand.blend is None:
        return frame["pred"].to_numpy(dtype=float)
    method, w = cand.blend
    return _zscore(frame["pred"].to_numpy()) + w * _zscore(ms_scores(history, frame, method))


REPORTED = ("regret@1", "regret@3", "pearson", "spearman")


def _metrics(y, p) -> dict:
    """The engine's per-dataset scoring (:func:`recommender.metrics.score_dataset`)."""
    sc = score_dataset(y, p, REPORTED)
    return {k: sc[k] for k in REPORTED}


def nested_lodo(history, candidates: list[Candidate], datasets=None, *, select_on: str = "regret@1",
                progress: bool = True, random_state: int = 0) -> dict:
    """Run the nested protocol; returns ``{"outer": DataFrame, "inner": DataFrame,
    "choices": DataFrame, "n_fits": int, "fit_seconds": float}``.

    ``outer`` has one row per (held-out dataset, candidate) with the plain LODO metrics;
    ``inner`` one row per (held-out dataset, candidate) with the inner means used to choose;
    ``choices`` one row per held-out dataset: the chosen candidate and its outer metrics.
    """
    lower_is_better = not METRICS[select_on].higher_is_better
    datasets = list(datasets or history.target_datasets())
    if len(datasets) < 3:
        raise ValueError(f"nested LODO needs at least 3 datasets with targets, got {len(datasets)}")
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise ValueError("candidate labels must be unique")
    fits = _Fits(history, random_state=random_state)
    bases = list(dict.fromkeys(c.base for c in candidates))
    inner_rows, outer_rows = [], []

    pairs = list(itertools.combinations(datasets, 2))
    steps = tqdm(total=len(pairs) + len(datasets), desc="nested LODO fits", disable=not progress, unit="split")
    # inner: datasets a and b both out; score on b for outer a, and on a for outer b
    for a, b in pairs:
        excluded = frozenset((a, b))
        for base in bases:
            for outer, inner in ((a, b), (b, a)):
                frame = fits.predict(base, excluded, inner)
                for c in candidates:
                    if c.base != base:
                        continue
                    p = _final_scores(c, frame, history)
                    inner_rows.append({"outer": outer, "inner": inner, "candidate": c.label,
                                       **_metrics(frame["value"].to_numpy(), p)})
        fits.forget(excluded)
        steps.update()
    # outer: each dataset out on its own
    for o in datasets:
        excluded = frozenset((o,))
        for base in bases:
            frame = fits.predict(base, excluded, o)
            for c in candidates:
                if c.base != base:
                    continue
                p = _final_scores(c, frame, history)
                outer_rows.append({"dataset": o, "candidate": c.label, **_metrics(frame["value"].to_numpy(), p)})
        fits.forget(excluded)
        steps.update()
    steps.close()

    inner = pd.DataFrame(inner_rows).groupby(["outer", "candidate"], sort=False)[["regret@1", "pearson"]].mean()
    inner = inner.reset_index()
    outer = pd.DataFrame(outer_rows)
    order = {lab: i for i, lab in enumerate(labels)}
    choices = []
    for o in datasets:
        cand = inner[inner["outer"] == o].copy()
        cand["order"] = cand["candidate"].map(order)
        key = cand[select_on] if lower_is_better else -cand[select_on]
        cand = cand.assign(_key=key).sort_values(["_key", "pearson", "order"], ascending=[True, False, True])
        chosen = cand.iloc[0]["candidate"]
        got = outer[(outer["dataset"] == o) & (outer["candidate"] == chosen)].iloc[0]
        choices.append({"dataset": o, "chosen": chosen, f"inner_{select_on}": cand.iloc[0][select_on],
                        **{k: got[k] for k in REPORTED}})
    return {"outer": outer, "inner": inner, "choices": pd.DataFrame(choices),
            "n_fits": fits.n_fits, "fit_seconds": fits.fit_seconds}


def summarize(result: dict, select_on: str = "regret@1") -> pd.DataFrame:
    """The three summary rows (see the module docstring) plus every candidate's plain LODO mean."""
    outer, choices = result["outer"], result["choices"]
    cols = list(REPORTED)
    per_cand = outer.groupby("candidate", sort=False)[cols].mean()
    lower = not METRICS[select_on].higher_is_better
    best_fixed = per_cand[select_on].idxmin() if lower else per_cand[select_on].idxmax()
    pick = outer.groupby("dataset")[select_on].idxmin() if lower else outer.groupby("dataset")[select_on].idxmax()
    oracle = outer.loc[pick]
    rows = [
        {"method": "nested (honest)", **choices[cols].mean().to_dict()},
        {"method": f"best-fixed (optimistic): {best_fixed}", **per_cand.loc[best_fixed].to_dict()},
        {"method": "per-dataset oracle (optimistic)", **oracle[cols].mean().to_dict()},
    ]
    rows += [{"method": f"  {c}", **per_cand.loc[c].to_dict()} for c in per_cand.index]
    return pd.DataFrame(rows)


def regret_chart(result: dict, path, reference: str = "lr[d,m]", title: str = "") -> Path:
    """Per held-out dataset regret@1: the nested choice, a fixed reference candidate and the
    per-dataset oracle (grouped horizontal bars), with the 1-point line."""
    plt = _plt()
    outer, choices = result["outer"], result["choices"]
    ds = list(choices["dataset"])
    nested = choices.set_index("dataset")["regret@1"]
    ref = outer[outer["candidate"] == reference].set_index("dataset")["regret@1"]
    oracle = outer.groupby("dataset")["regret@1"].min()
    y = np.arange(len(ds))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(ds) + 1.5))
    for off, (lab, ser, col) in zip((-0.27, 0.0, 0.27), ((f"nested (mean {nested.mean():.2f})", nested, "tab:blue"),
                                                         (f"{reference} (mean {ref.mean():.2f})", ref, "tab:gray"),
                                                         (f"per-dataset oracle (mean {oracle.mean():.2f})", oracle,
                                                          "tab:green"))):
        ax.barh(y + off, [ser.get(d, np.nan) for d in ds], height=0.25, color=col, label=lab)
    ax.axvline(1.0, color="tab:red", ls="--", lw=1, label="target mean 1.0")
    ax.set_yticks(y, ds)
    ax.invert_yaxis()
    ax.set_xlabel("regret@1 (accuracy points, lower is better)")
    ax.set_title(title or "Nested LODO on TransferGraph-image")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi=110)


def _weights(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise SystemExit(f"--blend-weights: expected comma-separated numbers such as 0.2,0.5, got {text!r}") from None
    if any(w <= 0 for w in out):
        raise SystemExit(f"--blend-weights: weights must be positive, got {text!r}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with transfergraph-image/")
    ap.add_argument("--select-on", default="regret@1", choices=["regret@1", "pearson"],
                    help="inner metric that chooses the configuration")
    ap.add_argument("--with-fm", action="store_true", help="also consider fm (slow: seconds per fit)")
    ap.add_argument("--blend-weights", default="0.2,0.5",
                    help="weights w of the lr[d,m] + w * z(ms score) candidates (comma-separated)")
    ap.add_argument("--out", default=None, help="write the per-dataset choices and outer table as CSV here")
    ap.add_argument("--plot", default=None, help="write the per-dataset regret chart (PNG) here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    hist = load_tg_image(Path(args.data))
    print(f"# {hist!r}")
    cands = default_candidates(with_fm=args.with_fm,
                               score_methods=sorted(hist.scores["method"].unique()),
                               blend_weights=_weights(args.blend_weights))
    print(f"# {len(cands)} candidates, selection on inner mean {args.select_on}")
    res = nested_lodo(hist, cands, select_on=args.select_on)
    pd.set_option("display.width", 200)
    print("\nPer held-out dataset: chosen candidate (inner selection) and its outer metrics")
    print(res["choices"].round(3).to_string(index=False))
    print("\nSummary (mean over held-out datasets; regret in accuracy points)")
    print(summarize(res, args.select_on).round(3).to_string(index=False))
    print(f"\n{res['n_fits']} fits, {res['fit_seconds']:.1f} s fitting, {time.perf_counter() - t0:.1f} s total")
    if args.plot:
        print(f"wrote {regret_chart(res, args.plot)}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        res["choices"].to_csv(out / "nested_choices.csv", index=False)
        res["outer"].to_csv(out / "nested_outer.csv", index=False)
        print(f"wrote {out}/nested_choices.csv and nested_outer.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
