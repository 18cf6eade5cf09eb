"""experiments.logme_forms (which LogME form ranks CNNs better at n <= D) runs end to end on a
reduced size and gives finite correlations; the numbers themselves are in docs/scores.md."""
from __future__ import annotations

import math

import pytest

from experiments.logme_forms import FORMS, TRUTHS, correlations, report, run_seed

pytestmark = pytest.mark.timeout(120)


def test_logme_forms_runs_and_gives_finite_correlations():
    import torch
    from threadpoolctl import threadpool_limits


    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = [("init-256", 256, 1, None, 0), ("src04-e1-256", 256, 1, (0, 1, 2, 3, 4), 1),
                  ("all-e2-320-deep", 320, 2, tuple(range(10)), 2)]
        with threadpool_limits(1):
            out = run_seed(0, 60, models=models, ft_epochs=3)
    finally:
        torch.set_num_threads(threads)
    assert set(out["ours"]) == {m[0] for m in models}
    corr = correlations(out)
    for f in FORMS:
        for t in TRUTHS:
            assert all(math.isfinite(v) and -1 <= v <= 1 for v in corr[(f, t)]), (f, t, corr[(f, t)])
    lines = report({0: out, 1: out}, 60)
    assert lines[0].startswith("probe n = 60, D = 256-320, 3 models")
    assert any(line.startswith("ours   finetune") for line in lines)


def test_logme_forms_refuses_a_probe_larger_than_d():

    with pytest.raises(ValueError, match="n <= D"):
        run_seed(0, 300, models=[("init-256", 256, 1, None, 0)], ft_epochs=1)
