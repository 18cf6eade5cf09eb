"""`python -m recommender demo --zoo`: offline, the tiny zoo, train, score and search --budget 3."""
from __future__ import annotations

import re
import time

import pytest

from recommender.cli import main

pytestmark = pytest.mark.timeout(600)


def test_demo_zoo_runs_offline_and_beats_chance(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    rc = main(["--home", str(tmp_path), "demo", "--zoo", "--no-mlflow"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert all(f"[{k}/4]" in out for k in range(1, 5))
    picks = re.findall(r"^\s+\d\. (\S+): ([\d.]+)%", out, flags=re.M)
    assert len(picks) == 3 and len({m for m, _ in picks}) == 3
    best = float(re.search(r"best: \S+ at ([\d.]+)% \(chance 10%\)", out).group(1))
    assert best >= 30.0  # well above chance (10 classes)
    assert (tmp_path / "demo-zoo" / "READY").exists()
    print(f"demo --zoo: {time.perf_counter() - t0:.0f} s, best {best}%")
    # re-running re-uses the zoo and resumes the search (no new fine-tune)
    assert main(["--home", str(tmp_path), "demo", "--zoo", "--no-mlflow"]) == 0
    assert "building it" not in capsys.readouterr().out
