"""docs/extending.md runs as written: each section's code blocks are extracted and executed.

Copy the matching test as the test of your own recommender, importer, score or command.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

import recommender.cli as cli
from features.scores import SCORES, get_score, list_scores
from history import HistoryStore
from history.importers import IMPORTERS, load_all
from recommender import create_recommender, list_recommenders, load_recommender, save_recommender
from recommender.cli import main
from recommender.registry import RECOMMENDERS
from tests.helpers import make_synthetic_store

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "extending.md"


def sections() -> dict[str, list[tuple[str, str]]]:
    """``{"## title": [(language, code), ...]}`` of docs/extending.md."""
    out, title = {}, None
    for m in re.finditer(r"^(## [^\n]+)$|^```(\w*)\n(.*?)^```$", DOC.read_text(), re.M | re.S):
        if m.group(1):
            title = m.group(1)[3:].strip()
            out[title] = []
        elif title:
            out[title].append((m.group(2), m.group(3)))
    return out


def run_section(title: str, tmp_path, monkeypatch) -> dict:
    """Execute the section's python blocks in order, in one namespace, inside ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "docs_extending_" + re.sub(r"\W+", "_", title)}
    blocks = [code for lang, code in sections()[title] if lang == "python"]
    assert blocks, f"no python block under '## {title}'"
    for code in blocks:
        exec(compile(code, f"{DOC}:{title}", "exec"), ns)
    return ns


@pytest.fixture(autouse=True)
def clean_registries():
    """The recipes register names; take them out again after each test."""
    load_all()
    saved = [(d, dict(d)) for d in (RECOMMENDERS, IMPORTERS, SCORES)]
    yield
    for d, before in saved:
        d.clear()
        d.update(before)


def test_the_doc_has_the_four_recipes():
    assert {"A recommender", "An importer", "A model-selection (MS) score", "A CLI command",
            "Package names"} <= set(sections())


def test_recommender_recipe(tmp_path, monkeypatch, capsys):
    ns = run_section("A recommender", tmp_path, monkeypatch)

    assert "tiny-ridge" in list_recommenders()
    top = ns["top"]
    assert len(top) == 3 and "predicted" in top.columns
    rec = ns["rec"]
    save_recommender(rec, tmp_path / "tiny")
    back = load_recommender(tmp_path / "tiny")
    pairs = ns["history"].targets[["model", "dataset"]]
    np.testing.assert_allclose(back.predict(pairs), rec.predict(pairs))
    assert create_recommender("tiny-ridge").get_params()["alpha"] == 1.0


def test_recommender_recipe_trains_from_the_cli(tmp_path, monkeypatch, capsys):
    run_section("A recommender", tmp_path, monkeypatch)

    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    make_synthetic_store(store)
    store.dispose()
    args = ["--home", str(tmp_path / "home"), "--store", str(tmp_path / "h.db")]
    assert main([*args, "train", "-r", "tiny-ridge", "--no-mlflow", "--cv-folds", "0"]) == 0
    assert main([*args, "predict", "-d", "ds0", "-r", "tiny-ridge", "-k", "3", "-f", "json"]) == 0
    assert '"recommender": "tiny-ridge"' in capsys.readouterr().out


def test_importer_recipe(tmp_path, monkeypatch):
    ns = run_section("An importer", tmp_path, monkeypatch)
    assert ns["report"].jobs_added == 2
    jobs = ns["store"].jobs_frame(source="lab")
    assert sorted(jobs["model"]) == ["resnet50", "vit_b16"] and jobs["value"].max() == pytest.approx(0.88)
    assert ns["get_importer"]("lab-notebook").run(ns["store"], "lab.csv").jobs_added == 0  # idempotent

    assert main(["--store", str(tmp_path / "lab.db"), "history", "import", "lab.csv",
                 "--input-format", "lab-notebook", "-o", "source=lab2"]) == 0
    assert len(ns["store"].jobs_frame(source="lab2")) == 2


def test_score_recipe(tmp_path, monkeypatch):
    ns = run_section("A model-selection (MS) score", tmp_path, monkeypatch)

    assert "centroid-gap" in list_scores() and get_score("centroid-gap").summary
    labels = ns["labels"]
    far = ns["compute_score"]("centroid-gap", ns["rng"].normal(size=(60, 8)) + 5 * labels[:, None], labels)
    near = ns["compute_score"]("centroid-gap", ns["rng"].normal(size=(60, 8)), labels)
    assert far > near > 0


def test_cli_command_recipe(tmp_path, monkeypatch, capsys):
    ns = run_section("A CLI command", tmp_path, monkeypatch)
    toml = next(code for lang, code in sections()["A CLI command"] if lang == "toml")
    eps = tomllib.loads(toml)["project"]["entry-points"]["recommender.commands"]
    assert list(eps) == ["count-jobs"] and eps["count-jobs"].endswith(":register_count_jobs")

    class EntryPoint:  # what importlib.metadata returns for the installed entry point
        name = "count-jobs"

        @staticmethod
        def load():
            return ns["register_count_jobs"]

    real = cli.entry_points
    monkeypatch.setattr(cli, "entry_points", lambda group: [*real(group=group), EntryPoint()])

    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    store.commit(jobs=[{"model": f"m{i}", "dataset": "d", "value": 0.5, "source": "s"} for i in range(3)])
    store.dispose()
    assert cli.main(["--store", str(tmp_path / "h.db"), "count-jobs", "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"s": 3}'
