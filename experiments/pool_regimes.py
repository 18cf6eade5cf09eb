"""Does pooling another source's regime help? ``python -m experiments.pool_regimes [--store URL]``.

On a store holding TransferGraph-image, SHiFT and PARC (imported and enriched into a temporary
store when ``--store`` is not given), prints (1) for each TransferGraph dataset the Spearman
agreement between TransferGraph's full fine-tunings and SHiFT's VTAB-1k runs (1,000 training
examples) of the same task over their shared models, and (2) leave-one-dataset-out regret@1 and
weighted tau of ``lr[d,m]`` and ``model-mean`` per held-out TransferGraph dataset, trained on
TransferGraph alone, pooled with SHiFT's VTAB-1k runs (+ PARC), and pooled with SHiFT's ``full``
runs (+ PARC). No selection: one fixed configuration, every dataset reported.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from history.enrich import enrich
from history.importers import get_importer
from history.store import HistoryStore

from .benchmarks import default_data_dir
from .evaluate import evaluate
from .histories import load_history, load_pooled

POOLS = {"base": None, "pooled-vtab1k": "transfergraph-image,shift:vtab-1k,parc",
         "pooled-full": "transfergraph-image,shift:full,parc"}


def _store(url, tmp):
    if url:
        return HistoryStore(url)
    st = HistoryStore(f"sqlite:///{Path(tmp) / 'pooled.db'}")
    data = default_data_dir()
    for imp, folder in (("transfergraph", "transfergraph-image"), ("shift", "shift"), ("parc", "parc")):
        get_importer(imp).run(st, data / folder)
    enrich(st)
    return st


def main(argv=None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(prog="python -m experiments.pool_regimes", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="store URL with the three public histories (default: import them)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recommender-pool-") as tmp:
        st = _store(args.store, tmp)
        frames = {}
        for name, spec in POOLS.items():
            if spec is None:
                frames[name], *_ = load_history(st, source="transfergraph-image")
            else:
                frames[name], _, _, notes, primary = load_pooled(st, source=spec)
                print(f"{name}: " + "; ".join(notes))
        t = frames["pooled-vtab1k"].targets
        rows = []
        for d in primary:
            a = t[t["dataset"] == d].set_index("model")["value"]
            b = t[t["dataset"] == f"{d}@shift"].set_index("model")["value"]
            common = a.index.intersection(b.index)
            if len(common) > 5:
                rows.append({"dataset": d, "shared models": len(common),
                             "spearman TG full vs SHiFT VTAB-1k":
                                 round(a[common].corr(b[common], method="spearman"), 3)})
        print("\nSame task, same models: TransferGraph full fine-tuning vs SHiFT VTAB-1k")
        print(pd.DataFrame(rows).to_string(index=False))
        out = {}
        for name, h in frames.items():
            r = evaluate(h, protocol="lodo", recommenders="lr", feature_sets=["d,m"], baselines="model-mean",
                         progress=False, candidates="viable", datasets=primary)
            u = r.units(["regret@1", "weighted_tau"])
            for m in ("lr[d,m]", "model-mean"):
                x = u[u["method"] == m].set_index("unit")
                out[(name, m, "regret@1")] = x["regret@1"]
                out[(name, m, "w-tau")] = x["weighted_tau"]
        df = pd.DataFrame(out)
        print("\nLeave one TransferGraph dataset out (viable candidates), per held-out dataset")
        print(df.round(3).to_string())
        print("\nmeans")
        print(df.mean().round(3).unstack().to_string())
        st.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
