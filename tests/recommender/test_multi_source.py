"""Several sources in one store stay coherent (issue 21 item 1).

A store holding every public history gives, for TransferGraph-image, the same viability
flags, evaluation and recommendations as a store holding TransferGraph-image only; ``train``
without ``--source`` on such a store refuses with one line; viability flags are per source
and regime (another source's runs never un-flag a model), computed on read so that stores
written before keep working.
"""
from __future__ import annotations

import pandas as pd
import pytest

from experiments.evaluate import evaluate
from experiments.histories import load_history
from features.history_frame import HistoryFrame
from history import schema as S
from history.errors import RecommenderError
from history.store import HistoryStore
from history.viability import assess_groups, degenerate_models
from recommender.cli import main
from recommender.commands.train import pooled_history
from recommender.prediction import recommend_for_dataset
from recommender.training import train_recommenders, trained_on

TG = "transfergraph-image"
DEGENERATE_TG = {"lysandre/tiny-vit-random", "nateraw/test_model_a"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, shared_data):
    """{"tg": (home, store), "all": (home, store)}: TransferGraph-image alone, every public source."""
    out = {}
    for key, args in (("tg", ["transfergraph-image", "--from", str(shared_data / TG)]),
                      ("all", ["all", "--from", str(shared_data)])):
        home = tmp_path_factory.mktemp(f"multi-{key}")
        assert main(["--home", str(home), "history", "pull", *args]) == 0
        out[key] = (home, HistoryStore(f"sqlite:///{home / 'history.db'}"))
    yield out
    for _, st in out.values():
        st.dispose()


def _load(store):
    h, *_ = load_history(store, source=TG)
    return h


@pytest.mark.slow
def test_all_sources_store_flags_and_evaluates_transfergraph_like_its_own_store(stores):
    assert len(stores["all"][1].sources()) >= 7
    hists = {k: _load(st) for k, (_, st) in stores.items()}
    for h in hists.values():  # SHiFT's runs of these models do not un-flag them for TransferGraph
        assert degenerate_models(h.models) == DEGENERATE_TG
    assert len(hists["all"].datasets) == len(hists["tg"].datasets)  # no other source's dataset in the frame
    summaries = {}
    for k, h in hists.items():
        mm = evaluate(h, recommenders=[], baselines=["model-mean"], progress=False)
        lr = evaluate(h, recommenders=["lr"], feature_sets=["d,m"], baselines=[], progress=False,
                      datasets=["cifar100", "eurosat"])
        summaries[k] = pd.concat([r.summary(candidates=c).assign(candidates=c) for r in (mm, lr)
                                  for c in ("viable", "all")], ignore_index=True)
        assert sorted(mm.config["degenerate_models"]) == sorted(DEGENERATE_TG)
    pd.testing.assert_frame_equal(summaries["tg"], summaries["all"])
    s = summaries["all"].set_index(["method", "candidates"])
    assert s.loc[("model-mean", "viable"), "pearson_mean"] == pytest.approx(0.572, abs=5e-4)  # 12 datasets
    assert s.loc[("model-mean", "all"), "pearson_mean"] == pytest.approx(0.813, abs=5e-4)


@pytest.mark.slow
def test_all_sources_store_recommends_like_transfergraph_store(stores):
    ranked = {}
    for k, (home, st) in stores.items():
        res = train_recommenders(st, "lr", source=TG, home=home, mlflow=False, cv_folds=0, progress=False)
        assert res[0].info["trained_on"]["sources"] == [TG] and res[0].info["trained_on"]["regimes"] == ["full"]
        ranked[k], meta = recommend_for_dataset(st, "cifar100", name="lr", home=home, k=5, source=TG)
        assert meta["degenerate_excluded"] == 2 and len(ranked[k]) == 5
    # the recommendations are equal; only the all-sources store has results of other sources to mark
    same = ["rank", "model", "predicted", "std", "real"]
    pd.testing.assert_frame_equal(ranked["tg"][same], ranked["all"][same])
    assert ranked["tg"]["elsewhere"].isna().all() and ranked["all"]["elsewhere"].notna().any()


@pytest.mark.slow
def test_train_without_source_on_several_sources_refuses_in_one_line(stores, capsys):
    home, st = stores["all"]
    rc = main(["--home", str(home), "train", "-r", "lr", "--cv-folds", "0", "--no-mlflow"])
    out, err = capsys.readouterr()
    assert rc != 0 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--source" in lines[0]
    assert all(s in lines[0] for s in st.sources())
    # a single-source store trains without --source, and says on what
    home, _ = stores["tg"]
    assert main(["--home", str(home), "train", "-r", "lr", "--cv-folds", "0", "--no-mlflow"]) == 0
    assert f"trained lr on source {TG}, regime full:" in capsys.readouterr().out


@pytest.mark.slow
def test_pooled_training_says_so_and_needs_standardized_targets(stores, capsys):
    home, st = stores["all"]
    pooled = pooled_history(st, f"{TG},shift")
    capsys.readouterr()
    with pytest.raises(RecommenderError, match="target_norm='dataset'"):
        train_recommenders(st, "lr", source=f"{TG},shift", home=home, mlflow=False, cv_folds=0, progress=False,
                           history=pooled, params={"lr": {"target_norm": "none"}})
    on = trained_on(pooled)
    assert on["pooled"] == {"shift": "full"} and TG in on["sources"] and on["regimes"] == ["full"]


# ------------------------------------------------------------------ per source and regime, on read
def _two_source_store(store):
    """"dead" is at chance on every dataset of source a, and fine on more datasets of source b."""
    ds = [{"name": f"d{i}", "num_classes": 10} for i in range(6)]
    jobs = [{"model": m, "dataset": f"d{i}", "value": v, "source": "a"}
            for i in range(3) for m, v in (("dead", 0.1), ("alive", 0.9), ("alive2", 0.85))]
    jobs += [{"model": m, "dataset": f"d{i}", "value": v, "source": "b"}
             for i in range(6) for m, v in (("dead", 0.9), ("alive", 0.8))]
    store.commit(datasets=ds, jobs=jobs)


def test_another_source_never_unflags_a_model(store):
    _two_source_store(store)
    stored = store.models_frame().set_index("name")
    assert bool(stored.loc["dead", "degenerate"]) and "jobs of a/full" in stored.loc["dead", "degenerate_reason"]
    a = HistoryFrame.from_store(store, source="a").models.set_index("name")
    b = HistoryFrame.from_store(store, source="b").models.set_index("name")
    assert bool(a.loc["dead", "degenerate"]) and "3 of 3" in a.loc["dead", "degenerate_reason"]
    assert not bool(b.loc["dead", "degenerate"])
    # pooled over both sources the old rule had "dead" at chance on 3 of 6 datasets: viable
    res = assess_groups(store.jobs_frame(), {f"d{i}": 10 for i in range(6)}, by=()).set_index("model")
    assert not res.loc["dead", "degenerate"]


def test_flags_are_computed_on_read_for_stores_written_before(store):
    """A store whose stored flags were pooled over every source (older versions) still gives
    each source its own flags: the frame does not trust the stored column."""
    _two_source_store(store)
    from sqlalchemy import update

    with store.write() as conn:  # as an older version stored it (flags pooled over the sources)
        conn.execute(update(S.models).values(degenerate=False, degenerate_reason=None))
    assert not bool(store.models_frame().set_index("name").loc["dead", "degenerate"])
    a = HistoryFrame.from_store(store, source="a").models.set_index("name")
    assert bool(a.loc["dead", "degenerate"])
    # several regimes of one source are assessed apart too
    store.commit(jobs=[{"model": "dead", "dataset": f"d{i}", "value": 0.9, "source": "a", "regime": "vtab-1k"}
                       for i in range(6)])
    full = HistoryFrame.from_store(store, source="a", regime="full").models.set_index("name")
    vtab = HistoryFrame.from_store(store, source="a", regime="vtab-1k").models.set_index("name")
    assert bool(full.loc["dead", "degenerate"]) and not bool(vtab.loc["dead", "degenerate"])


def test_source_scope_keeps_registered_datasets_and_local_scores(store):
    _two_source_store(store)
    store.commit(datasets=[{"name": "mine", "num_classes": 5, "num_samples": 100},
                           {"name": "bonly", "num_classes": 5}],
                 jobs=[{"model": "alive", "dataset": "bonly", "value": 0.5, "source": "b"}],
                 scores=[{"model": "alive", "dataset": "mine", "method": "logme", "value": 1.0,
                          "source": "score-cli"},
                         {"model": "alive", "dataset": "d0", "method": "logme", "value": 2.0, "source": "b"}])
    h = HistoryFrame.from_store(store, source="a", dataset_scope="source")
    assert "mine" in set(h.datasets["name"]) and "bonly" not in set(h.datasets["name"])
    assert set(zip(h.scores["dataset"], h.scores["value"])) == {("mine", 1.0)}
    every = HistoryFrame.from_store(store, source="a")  # predict's default: every dataset
    assert {"mine", "bonly"} <= set(every.datasets["name"])
