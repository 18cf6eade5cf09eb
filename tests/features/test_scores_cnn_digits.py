"""Do the registered MS scores rank a clearly weaker and a clearly stronger trained CNN correctly?

Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 images), split in half: a *source*
half used to pre-train two small CNNs and a *target* half (all 10 digits) to transfer to.

* ``weak``: pre-trained on digits 0-4 only, 1 epoch (5 source classes);
* ``strong``: pre-trained on all 10 digits, 20 epochs (10 source classes).

Ground truth = "fine-tuned" accuracy: a linear head (logistic regression on the frozen
penultimate features) trained on only 10 labelled target-train images per class (few-shot:
feature quality dominates), evaluated on the target-test split. The scores are computed on
a 300-sample probe of target-train with the features and source-class probabilities from
:class:`features.extract.TorchAdapter`; RSA/DDS get the features of a third small CNN
trained on target-train as the reference model.

The test asserts the ground-truth order (a real gap, not a tie) and that at least 70% of
the computable scores agree with it, printing which agree and which do not.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from features.extract import TorchAdapter
from features.probe import sample_probe
from features.scores import SCORES, compute_score

pytestmark = pytest.mark.timeout(120)


class DigitCNN(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),       # 16 x 4 x 4
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(32, 32), nn.ReLU(),
        )
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _train(x, y, classes, epochs, seed, lr=3e-3):
    torch.manual_seed(seed)
    m = DigitCNN(classes)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    m.train()
    for _ in range(epochs):
        for b in torch.randperm(len(xt), generator=g).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xt[b]), yt[b]).backward()
            opt.step()
    return m.eval()


def _linear_probe_accuracy(ftr, ytr, fte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(ftr)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(ftr), ytr)
    return float(clf.score(sc.transform(fte), yte))


@pytest.fixture(scope="module")
def transfer_setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and polite on shared CPUs
    try:
        return _setup()
    finally:
        torch.set_num_threads(threads)


def _setup():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [n, 1, 8, 8]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    src, tgt = perm[: len(y) // 2], perm[len(y) // 2:]
    tr, te = tgt[: len(tgt) // 2], tgt[len(tgt) // 2:]

    lo = src[y[src] < 5]
    models = {
        "weak": _train(x[lo], y[lo], 5, epochs=1, seed=1),
        "strong": _train(x[src], y[src], 10, epochs=20, seed=2, lr=1e-2),
    }
    reference = _train(x[tr], y[tr], 10, epochs=10, seed=3)  # a small model trained on the target task

    probe = tr[sample_probe(y[tr], 300, seed=0).indices]
    # fine-tuning budget: 10 labelled images per class (features matter most in the few-shot regime)
    fewshot = np.concatenate([np.flatnonzero(y[tr] == c)[:10] for c in range(10)])
    out = {"labels": y[probe], "models": {}, "truth": {}}
    for name, m in models.items():
        a = TorchAdapter(m, name)
        f_tr = a.extract(torch.as_tensor(x[tr]), progress=False).features
        f_te = a.extract(torch.as_tensor(x[te]), progress=False).features
        out["truth"][name] = _linear_probe_accuracy(f_tr[fewshot], y[tr][fewshot], f_te, y[te])
        r = a.extract(torch.as_tensor(x[probe]), progress=False)
        out["models"][name] = (r.features, r.probs)
    out["reference"] = TorchAdapter(reference, "ref").extract(torch.as_tensor(x[probe]), progress=False).features
    return out


def test_ground_truth_has_a_clear_winner(transfer_setup):
    t = transfer_setup["truth"]
    assert t["strong"] > t["weak"] + 0.05, t


def test_most_scores_rank_the_two_cnns_like_fine_tuning(transfer_setup):
    s = transfer_setup
    truth_strong_better = s["truth"]["strong"] > s["truth"]["weak"]
    agree, disagree, failed = [], [], {}
    for name, spec in sorted(SCORES.items()):
        vals = {}
        try:
            for m, (F, P) in s["models"].items():
                vals[m] = compute_score(name, F, s["labels"], probs=P if spec.needs_probs else None,
                                        reference=s["reference"] if spec.needs_reference else None)
        except Exception as exc:  # reported, counted against nothing
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        says_strong = (vals["strong"] > vals["weak"]) == spec.higher_is_better
        (agree if says_strong == truth_strong_better else disagree).append(f"{name}({vals['weak']:.3g}->"
                                                                           f"{vals['strong']:.3g})")
    n = len(agree) + len(disagree)
    summary = (f"truth {s['truth']}; {len(agree)}/{n} scores agree: {', '.join(agree)}; "
               f"disagree: {', '.join(disagree) or '-'}; failed: {failed or '-'}")
    print(summary)
    assert n >= max(3, len(SCORES) // 2), f"too few scores could be computed: {summary}"
    assert len(agree) >= 0.7 * n, summary
