"""``history enrich``: fills model meta-features offline, says per source what stayed unknown and
why, and is idempotent (a second run changes nothing)."""
from __future__ import annotations

import json

from history.store import HistoryStore
from recommender.cli import main


def cli(url, *argv):
    return main(["--store", url, "history", *map(str, argv)])


def test_enrich_cli_fills_reports_and_is_idempotent(home, shared_data, tmp_path, capsys):
    url = f"sqlite:///{home / 'history.db'}"
    assert cli(url, "import", shared_data / "parc" / "controlled.csv", "--input-format", "parc") == 0
    runs = tmp_path / "runs.csv"
    runs.write_text("model,dataset,accuracy,source\nsomeone/my_model,leaves,0.8,mine\n")
    assert cli(url, "import", runs, "--input-format", "generic") == 0
    capsys.readouterr()
    assert cli(url, "enrich", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["models_updated"] >= 32
    parc = first["sources"]["parc-controlled"]
    assert parc["models"] == 32 and all(parc["coverage"][f] == 1.0 for f in ("params", "gmacs", "input_size",
                                                                             "family", "domain"))
    mine = first["sources"]["mine"]
    assert mine["models"] == 1 and mine["coverage"]["params"] == 0.0
    assert "no architecture hint" in " ".join(mine["unknown"]["params"])  # the reason, not just a count
    s = HistoryStore(url)
    before = s.models_frame().set_index("name")
    s.dispose()
    assert cli(url, "enrich") == 0
    out = capsys.readouterr().out
    assert "0 models updated" in out and "nothing new to fill" in out and "coverage after enrich" in out
    assert "mine: 1 models" in out and "unknown params: 1 x" in out
    s = HistoryStore(url)
    after = s.models_frame().set_index("name")
    s.dispose()
    assert before.drop(columns=["id"]).astype(str).equals(after.drop(columns=["id"]).astype(str))


def test_enrich_cli_errors(home, capsys, tmp_path):
    url = f"sqlite:///{home / 'history.db'}"
    assert cli(url, "enrich", "--timm-dir", tmp_path) == 2
    err = capsys.readouterr().err
    assert "no benchmark-infer-*.csv" in err and err.count("\n") == 1
    assert cli(url, "enrich") == 0
    assert "the store has no models" in capsys.readouterr().out
