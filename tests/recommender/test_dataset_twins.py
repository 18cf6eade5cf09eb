"""No twin leaks: a store that holds one task under two names (a public history's canonical name
and a user's own alias) holds out both together, in every protocol; and a store pooled from the
public histories keeps one dataset row per task, with the jobs' sources unchanged."""
from __future__ import annotations

import pytest

from experiments import nested_lodo as N
from features.history_frame import HistoryFrame, synthetic_history
from history.datasets_registry import resolve_name
from history.importers import get_importer
from history.importers.transfergraph import TransferGraphImporter
from history.store import HistoryStore
from recommender.protocols import make_folds, twins_in

# dataset_000 .. dataset_004 renamed: two twin pairs (by the registry) and one unknown dataset
NAMES = {"dataset_000": "oxford_iiit_pet", "dataset_001": "pets", "dataset_002": "svhn",
         "dataset_003": "svhn_cropped", "dataset_004": "my_own_dataset", "dataset_005": "dtd"}
TWINS = {"oxford_iiit_pet": {"pets"}, "pets": {"oxford_iiit_pet"}, "svhn": {"svhn_cropped"},
         "svhn_cropped": {"svhn"}, "my_own_dataset": set(), "dtd": set()}


@pytest.fixture(scope="module")
def history():
    h = synthetic_history(12, 6, seed=3)
    ren = lambda df, col: df.assign(**{col: df[col].map(lambda n: NAMES.get(n, n))})
    return HistoryFrame(ren(h.targets, "dataset"), h.models, ren(h.datasets, "name"), ren(h.scores, "dataset"))


def test_twins_in():
    assert twins_in(["pets"], list(NAMES.values())) == ["oxford_iiit_pet", "pets"]
    assert twins_in(["my_own_dataset"], list(NAMES.values())) == ["my_own_dataset"]
    assert twins_in(["svhn", "dtd"], ["svhn_cropped", "dtd", "pets"]) == ["dtd", "svhn", "svhn_cropped"]


@pytest.mark.parametrize("protocol", ["lodo", "kfold", "coldstart"])
def test_held_out_dataset_takes_its_twins_out_of_training(history, protocol):
    plan = make_folds(history, protocol, seeds=1, k=3, min_models=3)
    assert plan.folds
    for fold in plan.folds:
        train_ds = set(fold.train.targets["dataset"])
        for d in fold.held_out_datasets:
            assert d not in train_ds and not (TWINS[d] & train_ds), (fold.fold_id, TWINS[d] & train_ds)
    # the other datasets stay in training (nothing more than the twins is removed)
    lodo = {f.fold_id: f for f in make_folds(history, "lodo", min_models=3).folds}
    assert set(lodo["lodo:pets"].train.targets["dataset"]) == {"svhn", "svhn_cropped", "my_own_dataset", "dtd"}


def test_setting1_drops_the_held_out_models_on_the_twins(history):
    for fold in make_folds(history, "setting1", seeds=2, min_models=3).folds:
        d = fold.held_out_datasets[0]
        t = fold.train.targets
        leaked = t[t["model"].isin(fold.held_out_models) & t["dataset"].isin({d} | TWINS[d])]
        assert leaked.empty, fold.fold_id
        # the held-out models keep their targets on other tasks
        assert t["model"].isin(fold.held_out_models).any()


def test_setting2_never_tests_on_a_twin_of_its_training_dataset(history):
    for fold in make_folds(history, "setting2", min_models=3).folds:
        (train_ds,) = set(fold.train.targets["dataset"])
        assert not ({train_ds} | TWINS[train_ds]) & set(fold.test["dataset"]), fold.fold_id


@pytest.mark.slow
def test_pooled_public_histories_share_dataset_rows(shared_data, tmp_path):
    """TransferGraph + SHiFT + PARC in one store: a twin is one row with every source's alias; each
    source's jobs are exactly its own import's jobs; lodo on the pooled store holds out the task
    from every source."""
    pooled = HistoryStore(f"sqlite:///{tmp_path / 'pooled.db'}")
    reads = {}
    for fmt, folder in (("transfergraph", "transfergraph-image"), ("shift", "shift"), ("parc", "parc")):
        r = get_importer(fmt).run(pooled, shared_data / folder)
        assert r.jobs_added == r.jobs_read
        reads[fmt] = r
    d = pooled.datasets_frame().set_index("name")
    assert not {"pets", "oxford_pets", "svhn", "flowers", "smallnorb_label_azimuth"} & set(d.index)
    al = d.loc["oxford_iiit_pet", "extra"]["aliases"]
    assert al["transfergraph-image"] == ["pets"] and al["shift"] == ["oxford_iiit_pet"]
    assert al["parc"] == ["oxford_pets"] and al["parc-controlled"] == ["oxford_pets"]
    assert d.loc["svhn_cropped", "extra"]["aliases"] == {"transfergraph-image": ["svhn"], "shift": ["svhn_cropped"]}
    sf = d.loc["caltech101", "extra"]["source_facts"]
    assert sf["parc"]["num_samples"] == 2630 and d.loc["caltech101", "num_samples"] == 3060
    st = pooled.stats()["by_source"]
    assert st["transfergraph-image"]["jobs"] == reads["transfergraph"].jobs_read
    assert st["shift"]["jobs"] == reads["shift"].jobs_read
    assert st["parc"]["jobs"] + st["parc-controlled"]["jobs"] == reads["parc"].jobs_read
    # per-source selection is unchanged: TransferGraph's 12 datasets, now under canonical names
    tg = HistoryFrame.from_store(pooled, source="transfergraph-image")
    assert len(tg.target_datasets()) == 12 and "oxford_iiit_pet" in tg.target_datasets()
    pool = HistoryFrame.from_store(pooled, regime="full", metric="accuracy")
    fold = next(f for f in make_folds(pool, "lodo", datasets=["oxford_iiit_pet"], check_kind=False).folds)
    assert "oxford_iiit_pet" not in set(fold.train.targets["dataset"])
    pooled.dispose()


@pytest.mark.slow
def test_a_store_from_before_the_registry_is_upgraded_on_reimport(shared_data, tmp_path, monkeypatch):
    """A store that holds TransferGraph's datasets under its own names (written before the registry):
    importing the same files again moves them to the canonical names and adds nothing."""
    s = HistoryStore(f"sqlite:///{tmp_path / 'old.db'}")
    monkeypatch.setattr(TransferGraphImporter, "canonical_datasets", False)
    first = get_importer("transfergraph").run(s, shared_data / "transfergraph-image")
    assert "pets" in set(s.datasets_frame()["name"])
    n_jobs, n_scores = len(s.jobs_frame()), len(s.scores_frame())
    monkeypatch.setattr(TransferGraphImporter, "canonical_datasets", True)
    again = get_importer("transfergraph").run(s, shared_data / "transfergraph-image")
    assert (again.jobs_added, again.jobs_existing, again.scores_added) == (0, first.jobs_read, 0)
    names = set(s.datasets_frame()["name"])
    assert {"oxford_iiit_pet", "svhn_cropped", "oxford_flowers102"} <= names and not {"pets", "svhn", "flowers"} & names
    assert len(s.jobs_frame()) == n_jobs and len(s.scores_frame()) == n_scores
    assert any("store upgraded: dataset 'pets'" in n for n in again.notes)
    assert s.get_dataset("oxford_iiit_pet")["extra"]["aliases"] == {"transfergraph-image": ["pets"]}
    # a third import changes nothing
    third = get_importer("transfergraph").run(s, shared_data / "transfergraph-image")
    assert third.jobs_added == 0 and not any("store upgraded" in n for n in third.notes)
    s.dispose()


def test_resolve_name():
    stored = ["oxford_iiit_pet", "svhn_cropped", "leaves"]
    assert resolve_name("pets", stored) == "oxford_iiit_pet" and resolve_name("svhn", stored) == "svhn_cropped"
    assert resolve_name("leaves", stored) == "leaves" and resolve_name("dtd", stored) is None
    assert resolve_name("oxford_pets", ["pets"]) == "pets"  # an old store: the twin that is there


def test_nested_lodo_folds_take_the_twins_out_too(history, monkeypatch):
    """experiments.nested_lodo builds its (inner and outer) training frames like the engine's lodo."""
    seen = []
    real = HistoryFrame.drop_targets

    def spy(self, *, datasets=None, **kw):
        seen.append(set(datasets or ()))
        return real(self, datasets=datasets, **kw)

    monkeypatch.setattr(HistoryFrame, "drop_targets", spy)
    N._Fits(history).predict(("model-mean", "", ()), frozenset({"pets"}), "pets")
    assert seen[-1] == {"pets", "oxford_iiit_pet"}
    N._Fits(history).predict(("model-mean", "", ()), frozenset({"svhn", "dtd"}), "dtd")
    assert seen[-1] == {"svhn", "svhn_cropped", "dtd"}
