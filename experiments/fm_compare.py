"""Which factorization machine? (``python -m experiments.fm_compare [--quick] [--inner-cv]``)

Compares, with the SAME featurizer and target normalization (``TabularRecommender``):
``myfm`` (Bayesian FM, Gibbs), ``modern-fm`` (SGD/Adam FM, Rust kernel) and ``torch``
(:class:`recommender.estimators.fm.FMRecommender`, L-BFGS), plus ridge (``lr``) as reference,

1. on TransferGraph-image LODO (each of the 12 datasets held out in turn; identical folds
   for all candidates): mean Pearson, Spearman, regret@1 (accuracy points), mean fit time;
2. train time on a synthetic 10^5-job history (10^3 models x 10^2 datasets,
   ``features.history_frame.synthetic_history``), extrapolated x10 to 10^6 jobs (all three
   are linear in rows x iterations).

Hyper-parameters are fixed defaults (printed). With ``--inner-cv`` the L2 scale of the
torch and modern-fm FMs is chosen per outer fold by a dataset-grouped inner CV
(MSE of the normalized target on held-out training datasets), never on the held-out dataset.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from experiments.quick_lodo import load_tg_image
from features.history_frame import synthetic_history
from history.datasets_registry import resolve_name
from recommender.estimators.base import TabularRecommender, grouped_folds
from recommender.estimators.fm import FMRecommender, MyFMRecommender, _FMSamplesMixin
from recommender.registry import create_recommender


class ModernFMRecommender(_FMSamplesMixin, TabularRecommender):
    """modern-fm ``FMRegressor`` (Adam, mini-batches, one thread) behind the same featurizer."""

    name = "fm-modern"

    def __init__(self, features="d,m,s", target_rule="best", random_state=0, target_norm="dataset", rank=8,
                 max_iter=50, batch_size=32, learning_rate=0.01, l2_linear=1e-4, l2_factors=1e-3,
                 init_scale=0.1, collab_bandwidth=1.0, model_ids=None, collab=False):
        self.features, self.target_rule = features, target_rule
        self.random_state, self.target_norm = random_state, target_norm
        self.rank, self.max_iter, self.batch_size, self.learning_rate = rank, max_iter, batch_size, learning_rate
        self.l2_linear, self.l2_factors, self.init_scale = l2_linear, l2_factors, init_scale
        self.collab_bandwidth, self.model_ids, self.collab = collab_bandwidth, model_ids, collab

    def _fit_estimator(self, X, y, groups, targets):
        from modern_fm import FMRegressor

        fm = FMRegressor(n_factors=int(self.rank), optimizer="adam", learning_rate=float(self.learning_rate),
                         max_iter=int(self.max_iter), batch_size=int(self.batch_size),
                         l2_linear=float(self.l2_linear), l2_factors=float(self.l2_factors),
                         init_scale=float(self.init_scale), dtype="float64", random_state=int(self.random_state),
                         n_jobs=1).fit(X.tocsr().astype(np.float64), y)
        self.w0_ = np.array([fm.w0_])
        self.w_ = np.asarray(fm.w_, dtype=float)[None]
        self.V_ = np.asarray(fm.V_, dtype=float)[None]


def _lr(**kw):
    return create_recommender("lr", **kw)


CANDIDATES = {  # name -> (factory, default params, L2 params scaled by --inner-cv)
    "myfm": (MyFMRecommender, {}, ()),
    "modern-fm": (ModernFMRecommender, {}, ("l2_linear", "l2_factors")),
    "torch": (FMRecommender, {}, ("l2_linear", "l2_factors")),
    "lr": (_lr, {}, ()),
}
L2_SCALES = (0.1, 1.0, 10.0)


def _defaults(name):
    factory, params, _ = CANDIDATES[name]
    rec = factory(**params)
    return rec.get_params()


def _inner_cv(name, history, params):
    """Pick the L2 scale by dataset-grouped inner CV on the training history only."""
    factory, base, l2keys = CANDIDATES[name]
    if not l2keys:
        return params
    t = history.targets[history.targets["value"].notna()].reset_index(drop=True)
    groups = pd.factorize(t["dataset"], sort=True)[0]
    datasets = np.array(sorted(t["dataset"].unique()))
    d0 = _defaults(name)
    best, best_err = params, np.inf
    for c in L2_SCALES:
        p = {**params, **{k: d0[k] * c for k in l2keys}}
        if "n_members" in d0:
            p["n_members"] = 1
        errs = []
        for _, val in grouped_folds(groups, 4):
            held = list(datasets[np.unique(groups[val])])
            rec = factory(**p).fit(history.drop_targets(datasets=held))
            tv = t.iloc[val]
            pred = rec.predict(tv[["model", "dataset"]], history=history)
            # per-dataset z-scored error (scale-free across datasets)
            for idx in tv.groupby("dataset").indices.values():
                yv, pv = tv["value"].to_numpy()[idx], pred[idx]
                errs.append(np.mean(((yv - yv.mean()) / (yv.std() + 1e-9) - (pv - pv.mean()) / (yv.std() + 1e-9)) ** 2))
        err = float(np.mean(errs))
        if err < best_err:
            best, best_err = {**params, **{k: d0[k] * c for k in l2keys}}, err
    return best


def lodo(history, name, features, inner_cv=False, datasets=None) -> pd.DataFrame:
    factory, base, _ = CANDIDATES[name]
    rows = []
    for d in datasets or history.target_datasets():
        truth = history.targets[history.targets["dataset"] == d]
        train = history.drop_targets(datasets=[d])
        params = {**base, "features": features}
        t0 = time.perf_counter()
        if inner_cv:
            params = _inner_cv(name, train, params)
        t1 = time.perf_counter()
        rec = factory(**params).fit(train)
        fit_s = time.perf_counter() - t1
        pred = rec.predict(truth[["model", "dataset"]], history=history)
        y = truth["value"].to_numpy()
        top = int(np.argmax(pred))
        rows.append({"dataset": d, "pearson": pearsonr(pred, y)[0], "spearman": spearmanr(pred, y)[0],
                     "regret@1": 100 * (y.max() - y[top]), "fit_s": fit_s, "select_s": t1 - t0,
                     "params": {k: v for k, v in params.items() if k in ("l2_linear", "l2_factors")}})
    return pd.DataFrame(rows)


def synthetic_train_time(name, n_models=1000, n_datasets=100) -> tuple[int, float]:
    h = synthetic_history(n_models=n_models, n_datasets=n_datasets, seed=0)
    factory, base, _ = CANDIDATES[name]
    rec = factory(**base)
    t0 = time.perf_counter()
    rec.fit(h)
    return len(h.targets), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default="myfm,modern-fm,torch,lr")
    ap.add_argument("--features", default="d,m;d,m,s", help="feature sets separated by ';'")
    ap.add_argument("--inner-cv", action="store_true", help="choose the L2 scale by inner grouped CV")
    ap.add_argument("--quick", action="store_true", help="6 of the 12 held-out datasets")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--per-dataset", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    hist = load_tg_image()
    names = args.candidates.split(",")
    datasets = None
    if args.quick:
        datasets = ["cifar100", "dtd", "flowers", "svhn", "stanfordcars", "kitti"]
        # TransferGraph's names -> the stored (canonical) ones
        datasets = [d for d in (resolve_name(q, hist.target_datasets()) for q in datasets) if d is not None]
    print(f"# {hist!r}; held out: {len(datasets or hist.target_datasets())} datasets; "
          f"inner CV: {args.inner_cv} (L2 scales {L2_SCALES})")
    for n in names:
        shown = {k: v for k, v in _defaults(n).items() if k not in ("features", "target_rule", "target_norm",
                                                                     "collab_bandwidth")}
        print(f"# {n}: {shown}")
    print(f"{'candidate':<10} {'features':<8} {'pearson':>8} {'spearman':>8} {'regret@1':>8} {'fit_s':>6}")
    for n in names:
        for feats in args.features.split(";"):
            res = lodo(hist, n, feats, inner_cv=args.inner_cv, datasets=datasets)
            if args.per_dataset:
                print(res.round(3).to_string(index=False))
            print(f"{n:<10} {feats:<8} {res['pearson'].mean():8.3f} {res['spearman'].mean():8.3f} "
                  f"{res['regret@1'].mean():8.2f} {res['fit_s'].mean():6.2f}", flush=True)
    if not args.no_synthetic:
        print(f"{'candidate':<10} {'jobs':>8} {'train_s':>8} {'x10 (10^6 jobs) est. s':>24}")
        for n in names:
            jobs, s = synthetic_train_time(n)
            print(f"{n:<10} {jobs:>8} {s:>8.1f} {10 * s:>24.0f}", flush=True)
    print(f"# {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
