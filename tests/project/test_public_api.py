"""The public face of the four packages: ``__all__`` names resolve, lazily (no heavy import)."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["history", "features", "recommender", "experiments"]
HEAVY = ["torch", "mlflow", "ray", "lightgbm", "pandas", "sklearn"]
NEEDED = {"history": {"HistoryStore", "register_importer", "get_importer", "RecommenderError", "NotFoundError"},
          "features": {"HistoryFrame", "Featurizer", "register_score", "get_score", "list_scores", "GROUPS"},
          "recommender": {"create_recommender", "register_recommender", "list_recommenders", "BaseRecommender",
                          "train_recommenders", "recommend_for_dataset", "register_protocol"},
          "experiments": {"run_evaluation", "register_baseline", "load_history"}}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve_and_none_shadows_a_submodule(package):
    mod = importlib.import_module(package)
    assert NEEDED[package] <= set(mod.__all__)
    subs = {p.stem for p in (REPO / package).iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert not set(mod.__all__) & subs, "a public name hides a submodule"
    for name in mod.__all__:
        assert getattr(mod, name) is not None
    assert set(mod.__all__) <= set(dir(mod))
    with pytest.raises(AttributeError):
        _ = mod.no_such_name


def test_importing_the_packages_is_light():
    code = ("import sys, history, features, recommender, experiments\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout
