"""Does conditioning on a dataset's own results make ``predict``'s next pick better? (issue 20)

    python -m experiments.conditioning                          # TransferGraph-image, default recommender
    python -m experiments.conditioning --reveal 3 --data DIR

Leave one dataset out: the default recommender is fitted on the other datasets; it predicts
every model with a result on the held-out dataset; the ``--reveal`` top-predicted models'
true accuracies are revealed; then the best remaining model is picked (a) by the prior
alone (``predict --ignore-own-results``) and (b) by the prior updated with the revealed
results (``predict``'s default: :func:`recommender.adaptive.update_predictions`, the rule
``search`` uses). Regret@1 = best true accuracy among the models not yet tried minus the
true accuracy of the pick, in accuracy points. Prints one row per held-out dataset and the
means; no assertion, figures only.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from features.history_frame import HistoryFrame
from history.store import HistoryStore
from recommender.adaptive import update_predictions
from recommender.cli import main as recommender_main
from recommender.defaults import DEFAULT_FEATURES, DEFAULT_RECOMMENDER
from recommender.registry import create_recommender

REPO = Path(__file__).resolve().parents[1]


def _history(data: Path):
    tmp = Path(tempfile.mkdtemp(prefix="conditioning-"))

    rc = recommender_main(["--home", str(tmp), "history", "pull", "transfergraph-image", "--from", str(data)])
    if rc:
        raise SystemExit(rc)
    store = HistoryStore(f"sqlite:///{tmp / 'history.db'}", create=False)
    try:
        return HistoryFrame.from_store(store, source="transfergraph-image")
    finally:
        store.dispose()


def regret_rows(hist, reveal: int = 2) -> pd.DataFrame:
    rows = []
    for d in hist.target_datasets():
        truth = hist.targets[hist.targets["dataset"] == d].groupby("model")["value"].max()
        if len(truth) <= reveal + 1:
            continue
        train = hist.drop_targets(datasets=[d])
        rec = create_recommender(DEFAULT_RECOMMENDER, features=DEFAULT_FEATURES).fit(train)
        models = sorted(truth.index)
        prior = pd.Series(np.asarray(rec.predict(pd.DataFrame({"model": models, "dataset": d}), history=train),
                                     dtype=float), index=models)
        order = sorted(models, key=lambda m: (-prior[m], m))
        tried = order[:reveal]
        observed = {m: float(truth[m]) for m in tried}
        post = update_predictions(prior, train.targets, d, observed)  # train.targets: d is not in it anyway
        left = [m for m in models if m not in observed]
        best = float(truth[left].max())
        pick_prior = min(left, key=lambda m: (-prior[m], m))
        pick_post = min(left, key=lambda m: (-post[m], m))
        rows.append({"dataset": d, "models": len(models), "revealed": ", ".join(tried),
                     "regret_prior": 100 * (best - truth[pick_prior]),
                     "regret_conditioned": 100 * (best - truth[pick_post]),
                     "pick_prior": pick_prior, "pick_conditioned": pick_post})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.conditioning", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "transfergraph-image"))
    ap.add_argument("--reveal", type=int, default=2, help="top-predicted models whose accuracy is revealed")
    args = ap.parse_args(argv)
    hist = _history(Path(args.data))
    df = regret_rows(hist, args.reveal)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[["dataset", "models", "regret_prior", "regret_conditioned", "pick_prior", "pick_conditioned"]]
              .round(2).to_string(index=False))
    better = int((df["regret_conditioned"] < df["regret_prior"] - 1e-9).sum())
    worse = int((df["regret_conditioned"] > df["regret_prior"] + 1e-9).sum())
    print(f"{date.today()}, load average {os.getloadavg()[0]:.1f}: TransferGraph-image LODO, {len(df)} held-out "
          f"datasets, {args.reveal} top-predicted models revealed; mean regret@1 over the models not yet tried "
          f"(accuracy points): prior {df['regret_prior'].mean():.2f}, conditioned {df['regret_conditioned'].mean():.2f}"
          f" (median {df['regret_prior'].median():.2f} vs {df['regret_conditioned'].median():.2f}); "
          f"conditioning better on {better}, worse on {worse}, tied on {len(df) - better - worse}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
