"""History store basics: idempotent commits, target rules, stats, bad URLs."""
import pytest

from history.errors import NotFoundError, StoreError
from history.store import HistoryStore


def _jobs():
    return [
        {"model": "m1", "dataset": "d1", "value": 0.5, "source": "x", "hparams": {"lr": 0.1}},
        {"model": "m1", "dataset": "d1", "value": 0.7, "source": "x", "hparams": {"lr": 0.01}},
        {"model": "m2", "dataset": "d1", "value": 0.6, "source": "x"},
    ]


def test_commit_is_idempotent(store):
    r1 = store.commit(jobs=_jobs())
    r2 = store.commit(jobs=_jobs())
    assert (r1.jobs_added, r2.jobs_added, r2.jobs_existing) == (3, 0, 3)
    assert len(store.jobs_frame()) == 3


@pytest.mark.parametrize("rule,expected", [("best", 0.7), ("mean", 0.6), ("latest", 0.7)])
def test_target_rules(store, rule, expected):
    store.commit(jobs=_jobs())
    t = store.targets(rule).set_index("model")
    assert t.loc["m1", "value"] == pytest.approx(expected)
    assert t.loc["m1", "n_jobs"] == 2


def test_unknown_rule(store):
    with pytest.raises(ValueError, match="best, mean, latest"):
        store.targets("median")


def test_model_meta_is_filled_not_overwritten(store):
    store.commit(models=[{"name": "m1", "params": 10.0}])
    store.commit(models=[{"name": "m1", "params": 99.0, "gmacs": 2.0}])
    m = store.get_model("m1")
    assert m["params"] == 10.0 and m["gmacs"] == 2.0


def test_scores_replaced_on_recompute(store):
    store.commit(scores=[{"model": "m1", "dataset": "d1", "method": "logme", "value": 1.0}])
    r = store.commit(scores=[{"model": "m1", "dataset": "d1", "method": "logme", "value": 2.0}])
    assert r.scores_replaced == 1
    assert store.scores_frame()["value"].tolist() == [2.0]


def test_failed_commit_leaves_store_untouched(store):
    store.commit(jobs=_jobs()[:1])
    with pytest.raises(ValueError):  # the value that is not a number
        store.commit(jobs=[_jobs()[1], {"model": "m3", "dataset": "d1", "value": "not-a-number"}])
    assert len(store.jobs_frame()) == 1
    assert "m3" not in store.models_frame()["name"].tolist()


def test_get_unknown_suggests(store):
    store.commit(jobs=_jobs())
    with pytest.raises(NotFoundError, match="m1"):
        store.get_model("m_1")


@pytest.mark.parametrize("url", ["notadialect://x/y", "postgresql+nodriver://u@h/db", "sqlite:////dev/null/x/history.db"])
def test_bad_store_url(url):
    with pytest.raises(StoreError, match="history store"):
        HistoryStore(url)


def test_store_path_is_directory(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        HistoryStore(f"sqlite:///{tmp_path}")


def test_stats_counts(store):
    store.commit(jobs=_jobs(), scores=[{"model": "m1", "dataset": "d1", "method": "logme", "value": 1.0}])
    st = store.stats()
    assert st["totals"]["jobs"] == 3 and st["totals"]["pairs"] == 2
    assert st["by_source"]["x"] == {"jobs": 3, "models": 2, "datasets": 1}
    assert st["scores_by_method"]["logme"]["pairs"] == 1
