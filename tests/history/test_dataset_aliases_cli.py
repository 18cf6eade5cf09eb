"""``history list-datasets --aliases`` and the alias / class-name / description options of
``history add-dataset``; a user's alias is held out with its dataset."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from features.history_frame import HistoryFrame
from history.store import HistoryStore
from recommender.cli import main
from recommender.protocols import make_folds


def cli(url, *argv):
    return main(["--store", url, "history", *map(str, argv)])


@pytest.fixture()
def url(home):
    return f"sqlite:///{home / 'history.db'}"


def _aliases(url, capsys, *more):
    capsys.readouterr()
    assert cli(url, "list-datasets", "--aliases", "--format", "json", *more) == 0
    return json.loads(capsys.readouterr().out)


def test_add_dataset_with_aliases_class_names_description(url, tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("healthy\nrust\n\nscab\n")
    assert cli(url, "add-dataset", "leaves", "--num-samples", 4000, "--num-classes", 3, "--alias", "plant_leaves",
               "--alias", "leafs,apple_leaves", "--class-names", f"@{names}",
               "--description", "Photos of apple leaves: healthy, rust or scab.") == 0
    out = capsys.readouterr().out
    assert "aliases: plant_leaves, leafs, apple_leaves" in out and "class names: 3" in out
    s = HistoryStore(url)
    ex = s.get_dataset("leaves")["extra"]
    assert ex == {"aliases": {"user": ["plant_leaves", "leafs", "apple_leaves"]},
                  "class_names": ["healthy", "rust", "scab"],
                  "description": "Photos of apple leaves: healthy, rust or scab."}
    s.dispose()
    rows = _aliases(url, capsys, "--source", "user")
    assert {(r["name"], r["canonical"], r["in_store"]) for r in rows} == {
        ("plant_leaves", "leaves", True), ("leafs", "leaves", True), ("apple_leaves", "leaves", True)}
    # --update adds aliases (keeps the earlier ones) and replaces the class names
    assert cli(url, "add-dataset", "leaves", "--num-samples", 4000, "--num-classes", 2, "--update",
               "--alias", "leaves_v2", "--class-names", "healthy, sick") == 0
    s = HistoryStore(url)
    ex = s.get_dataset("leaves")["extra"]
    s.dispose()
    assert ex["aliases"]["user"] == ["plant_leaves", "leafs", "apple_leaves", "leaves_v2"]
    assert ex["class_names"] == ["healthy", "sick"] and ex["description"].startswith("Photos")


@pytest.mark.parametrize("argv, message", [
    (["--class-names", "a,b"], "--class-names gives 2 names but --num-classes is 3"),
    (["--class-names", "a,a,b"], "repeated class name(s) a"),
    (["--class-names", "a,,b"], "empty class name"),
    (["--class-names", "@/no/such/file.txt"], "file /no/such/file.txt not found"),
    (["--alias", "pets"], "registry's name of 'oxford_iiit_pet', another dataset"),
    (["--alias", "leaves"], "the dataset's own name"),
    (["--description", " "], "--description must be one non-empty line"),
])
def test_add_dataset_refuses_bad_options(url, capsys, argv, message):
    assert cli(url, "add-dataset", "leaves", "--num-samples", 100, "--num-classes", 3, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    s = HistoryStore(url)
    assert not s.has_dataset("leaves")  # nothing written
    s.dispose()


def test_alias_taken_by_another_dataset(url, capsys):
    assert cli(url, "add-dataset", "leaves", "--num-samples", 100, "--num-classes", 3, "--alias", "foliage") == 0
    assert cli(url, "add-dataset", "other", "--num-samples", 100, "--num-classes", 3, "--alias", "foliage") == 2
    assert "already an alias of dataset 'leaves'" in capsys.readouterr().err
    assert cli(url, "add-dataset", "other", "--num-samples", 100, "--num-classes", 3, "--alias", "leaves") == 2
    assert "already a dataset in the store" in capsys.readouterr().err


def test_list_aliases_shows_the_registry_and_imported_names(url, shared_data, capsys):
    assert cli(url, "import", shared_data / "parc" / "controlled.csv", "--input-format", "parc") == 0
    rows = _aliases(url, capsys)
    pets = [r for r in rows if r["name"] == "oxford_pets" and r["source"] == "parc-controlled"]
    assert pets == [{"name": "oxford_pets", "source": "parc-controlled", "canonical": "oxford_iiit_pet",
                     "from": "registry, store", "in_store": True, "jobs": pets[0]["jobs"]}] and pets[0]["jobs"] > 0
    tg = [r for r in rows if r["name"] == "pets"]  # the registry's name for a source not imported here
    assert tg and tg[0]["from"] == "registry" and tg[0]["in_store"]  # its canonical row is in the store
    capsys.readouterr()
    assert cli(url, "list-datasets", "--aliases") == 0
    assert "oxford_pets" in capsys.readouterr().out
    assert cli(url, "list-datasets", "--aliases", "--source", "nope") == 2
    assert "no dataset aliases of source 'nope'" in capsys.readouterr().err


def test_a_user_alias_is_held_out_with_its_dataset():
    """Jobs imported under a user's alias (another row) leave training with the dataset's fold."""
    rows = [(m, d, 0.5 + 0.1 * i + 0.01 * j) for i, m in enumerate("abcd") for j, d in
            enumerate(["leaves", "foliage", "dtd", "cifar100"])]
    t = pd.DataFrame(rows, columns=["model", "dataset", "value"])
    ds = pd.DataFrame({"name": ["leaves", "foliage", "dtd", "cifar100"],
                       "extra": [{"aliases": {"user": ["foliage"]}}, None, None, None]})
    h = HistoryFrame(t, pd.DataFrame({"name": list("abcd")}), ds)
    folds = {f.fold_id: f for f in make_folds(h, "lodo", min_models=3).folds}
    assert set(folds["lodo:leaves"].train.targets["dataset"]) == {"dtd", "cifar100"}
    assert set(folds["lodo:foliage"].train.targets["dataset"]) == {"dtd", "cifar100"}
    assert set(folds["lodo:dtd"].train.targets["dataset"]) == {"leaves", "foliage", "cifar100"}


def test_show_and_predict_accept_a_source_name(url, shared_data, capsys):
    assert cli(url, "import", shared_data / "parc" / "controlled.csv", "--input-format", "parc") == 0
    capsys.readouterr()
    assert cli(url, "show", "dataset", "oxford_pets") == 0
    cap = capsys.readouterr()
    assert "dataset oxford_iiit_pet" in cap.out and "'oxford_pets' is stored as 'oxford_iiit_pet'" in cap.err
