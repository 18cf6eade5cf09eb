"""experiments.ablations: variant feature sets and the RESULTS.md section it maintains."""
from __future__ import annotations

from experiments.ablations import BEGIN, END, POOLED_REFERENCE, feature_sets, markdown, reference, update_results


def test_variant_feature_sets():
    assert feature_sets("base", True) == ["d,m", "d,m,s"] and feature_sets("pooled", False) == ["d,m"]
    assert feature_sets("+k", True) == ["d,m,k", "d,m,s,k"]
    assert feature_sets("+tkx", False) == ["d,m", "d,m,t,k,x"]


def test_results_section_is_replaced_in_place(tmp_path):
    row = {"benchmark": "tg-lodo", "variant": "+k", "regret@1": 1.5, "regret@3": 0.5, "weighted_tau": 0.6,
           "pearson": 0.7, "choices": {"lr[d,m,k]": 3},
           "lift:regret@1": {"mean": 0.4, "ci_low": 0.1, "ci_high": 0.8, "wins": 3, "ties": 1, "losses": 0, "n": 4},
           "lift:weighted_tau": {"mean": -0.01, "ci_low": -0.05, "ci_high": 0.02, "wins": 1, "ties": 1,
                                 "losses": 2, "n": 4}}
    abl = tmp_path / "ABLATIONS.md"
    abl.write_text(markdown([row, {"benchmark": "tg-lodo", "variant": "+x", "error": "boom"}], "cmd", 60))
    res = tmp_path / "RESULTS.md"
    res.write_text("# Benchmark results\n\nheadline\n")
    update_results(res, abl)
    text = res.read_text()
    assert ("| tg-lodo | +k | 1.50 | 0.50 | 0.600 | 0.700 | +0.40 [+0.10, +0.80] **>0** | -0.010 [-0.050, +0.020] |"
            in text)
    assert "FAILED: boom" in text and text.startswith("# Benchmark results\n\nheadline\n")
    abl.write_text(markdown([], "cmd", 1))
    update_results(res, abl)  # replaced, not appended
    text = res.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "| +k |" not in text


def test_pooled_rows_state_their_reference():
    assert reference("pooled") == POOLED_REFERENCE == "model-mean-own" and reference("+k") == "model-mean"
    lift = {"mean": 0.1, "ci_low": -0.1, "ci_high": 0.3, "wins": 2, "ties": 0, "losses": 1, "n": 3}
    row = {"benchmark": "tg-lodo", "variant": "pooled", "regret@1": 2.0, "regret@3": 1.0, "weighted_tau": 0.5,
           "pearson": 0.8, "reference": POOLED_REFERENCE, "lift:regret@1": lift, "lift:weighted_tau": lift,
           "ref:model-mean": {"regret@1": 8.88, "weighted_tau": 0.1},
           f"ref:{POOLED_REFERENCE}": {"regret@1": 2.16, "weighted_tau": 0.5}, "choices": {"lr[d,m]": 3}}
    text = markdown([row], "cmd", 1)
    assert "`model-mean-own`" in text and "tg-lodo 2.16 (own datasets) vs 8.88 (pooled)" in text
