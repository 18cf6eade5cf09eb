"""Which LogME form ranks models better when the probe has no more samples than feature dims?

    python -m experiments.logme_forms                 # 5 seeds, 8 CNNs, probe n = 150 (~2 min, 1 core)
    python -m experiments.logme_forms --seeds 0 1 --probe 100   # a smaller run

LogME's evidence of a Bayesian ridge regression with ``D`` weights has ``log|A| = sum_k
log(alpha + beta s_k) + (D - k) log alpha`` (k = rank <= n). thuml/LogME's default
``LogME._fit_fixed_point`` drops the ``(D - k) log alpha`` term, which matters only when
n <= D; the project keeps it (``logme``, docs/scores.md). This experiment measures which of
the two ranks real models better by their transfer accuracy.

Setup (scikit-learn's bundled ``load_digits``, 8x8 images; everything seeded by ``seed``):

* source task: digits 0-4; target task: digits 5-9 (classes the models never saw), split in
  half into target-train and target-test;
* 8 small CNNs whose penultimate ReLU layer has D = 256-512 units, differing in width,
  depth (1 or 2 conv layers) and pre-training (none; on 2, 3 or 5 source digits; 1-12
  epochs), so that their transfer quality spreads;
* scores: on a class-stratified probe of ``n`` target-train images (n <= D), ``ours`` =
  ``compute_score("logme")``, ``thuml`` = the line-for-line port of thuml/LogME
  ``_fit_fixed_point`` (tests/features/score_references.py), ``tllib`` = the port of tllib's
  ``log_maximum_evidence`` (full term, stops at a 1% change of alpha/beta, <= 11 steps);
* ground truth, two kinds: ``finetune`` = test accuracy after fine-tuning the whole network
  (new head, Adam, every layer) on 10 labelled target-train images per class; ``linprobe``
  = test accuracy of a logistic regression on the frozen penultimate features of all
  target-train images (more labels than the probe has).

Per seed it prints the Spearman and Kendall correlation of each form with each ground
truth over the 8 models, then the mean and standard deviation over the seeds and how many
seeds each form wins (ties counted apart). The Spearman of ``ours`` with ``thuml`` shows how
much the two rankings differ at all.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from datetime import date

import numpy as np

from experiments.bench_scores import load_references
from features.probe import sample_probe
from features.scores import compute_score

#: (name, penultimate width D, conv layers, pre-training source digits or None, epochs)
MODELS = [
    ("init-256", 256, 1, None, 0),
    ("init-512-deep", 512, 2, None, 0),
    ("shuffled-e5-384", 384, 1, "shuffled", 5),
    ("src01-e2-384", 384, 1, (0, 1), 2),
    ("src04-e3-256", 256, 1, (0, 1, 2, 3, 4), 3),
    ("src59-e3-512-deep", 512, 2, (5, 6, 7, 8, 9), 3),
    ("all-e1-512", 512, 1, tuple(range(10)), 1),
    ("all-e10-256-deep", 256, 2, tuple(range(10)), 10),
    ("all-e10-512", 512, 1, tuple(range(10)), 10),
]
FORMS = ("ours", "thuml", "tllib")
TRUTHS = ("finetune", "linprobe")


def _net(width: int, depth: int, classes: int):
    from torch import nn

    layers = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]  # 16 x 4 x 4
    if depth > 1:
        layers += [nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()]  # 32 x 4 x 4
    layers += [nn.Flatten(), nn.Linear(256 if depth == 1 else 512, width), nn.ReLU()]
    return nn.ModuleDict({"body": nn.Sequential(*layers), "head": nn.Linear(width, classes)})


def _train(net, x, y, epochs: int, seed: int, lr: float = 3e-3, batch: int = 32) -> None:
    import torch
    from torch import nn

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    net.train()
    for _ in range(epochs):
        for b in torch.randperm(len(xt), generator=g).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(net["head"](net["body"](xt[b])), yt[b]).backward()
            opt.step()
    net.eval()


def _features(net, x) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net["body"](torch.as_tensor(x)).numpy().astype(np.float64)


def _accuracy(net, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((net["head"](net["body"](torch.as_tensor(x))).argmax(1).numpy() == y).mean())


def _linear_probe(ftr, ytr, fte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(ftr)
    return float(LogisticRegression(max_iter=1000).fit(sc.transform(ftr), ytr).score(sc.transform(fte), yte))


def _data(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    src, tgt = perm[: len(y) // 2], perm[len(y) // 2:]
    tr, te = tgt[: len(tgt) // 2], tgt[len(tgt) // 2:]
    return x, y, src, tr, te


def run_seed(seed: int, probe_n: int, models=MODELS, shots: int = 5, ft_epochs: int = 30) -> dict:
    """Scores (per form) and ground truths (per kind) of every model for one seed."""
    import torch


    refs = _references()
    x, y, src, tr, te = _data(seed)
    ytr, yte = y[tr], y[te]
    probe = sample_probe(ytr, probe_n, seed=seed).indices
    few = np.concatenate([np.flatnonzero(ytr == c)[:shots] for c in range(10)])
    out: dict = {f: {} for f in FORMS + TRUTHS + ("D",)}
    for i, (name, width, depth, digits, epochs) in enumerate(models):
        torch.manual_seed(1000 * seed + i)
        net = _net(width, depth, 10)
        if digits == "shuffled":  # pre-trained to memorize random labels
            _train(net, x[src], np.random.default_rng(seed).permutation(y[src]), epochs, seed=1000 * seed + i)
        elif digits is not None:
            s = src[np.isin(y[src], digits)]
            _train(net, x[s], y[s], epochs, seed=1000 * seed + i)
        F = _features(net, x[tr])
        Fp, yp = F[probe], ytr[probe]
        if Fp.shape[0] > Fp.shape[1]:
            raise ValueError(f"{name}: probe n = {Fp.shape[0]} > D = {Fp.shape[1]}; this experiment is about n <= D")
        out["D"][name] = Fp.shape[1]
        out["ours"][name] = compute_score("logme", Fp, yp)
        out["thuml"][name] = float(refs["thuml"](Fp, yp))
        out["tllib"][name] = float(refs["tllib"](Fp, yp))
        out["linprobe"][name] = _linear_probe(F, ytr, _features(net, x[te]), yte)
        ft = copy.deepcopy(net)
        torch.manual_seed(7 + 1000 * seed + i)
        ft["head"] = torch.nn.Linear(width, 10)
        _train(ft, x[tr][few], ytr[few], ft_epochs, seed=7 + seed, lr=1e-3, batch=16)
        out["finetune"][name] = _accuracy(ft, x[te], yte)
    return out


def _references():
    loaded = load_references()
    if loaded is None:
        raise SystemExit("tests/features/score_references.py not found: run from a checkout of the repository")
    refs, extra = loaded
    return {"thuml": refs["logme"][1], "tllib": extra["logme"][0][1]}


def correlations(out: dict) -> dict:
    """{(form, truth): (spearman, kendall)} over the models of one seed, and ("ours", "thuml")."""
    from scipy.stats import kendalltau, spearmanr

    names = list(out["ours"])
    res = {}
    for f in FORMS:
        a = [out[f][m] for m in names]
        for t in TRUTHS:
            b = [out[t][m] for m in names]
            res[(f, t)] = (float(spearmanr(a, b)[0]), float(kendalltau(a, b)[0]))
    a, b = [out["ours"][m] for m in names], [out["thuml"][m] for m in names]
    res[("ours", "thuml")] = (float(spearmanr(a, b)[0]), float(kendalltau(a, b)[0]))
    return res


def _fmt(v: list[float]) -> str:
    return f"{statistics.mean(v):+.3f} +- {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"


def report(per_seed: dict[int, dict], probe_n: int) -> list[str]:
    """The table: per-seed correlations, their mean +- sd, and wins of ours over thuml."""
    corr = {s: correlations(o) for s, o in per_seed.items()}
    dims = [D for o in per_seed.values() for D in o["D"].values()]
    lines = [f"probe n = {probe_n}, D = {min(dims)}-{max(dims)}, {len(next(iter(per_seed.values()))['D'])} "
             f"models, seeds {' '.join(map(str, per_seed))}",
             f"{'form':<6} {'truth':<9} {'Spearman mean +- sd':>20} {'Kendall mean +- sd':>20}   per seed (Spearman)"]
    for f in FORMS:
        for t in TRUTHS:
            sp = [corr[s][(f, t)][0] for s in corr]
            kt = [corr[s][(f, t)][1] for s in corr]
            lines.append(f"{f:<6} {t:<9} {_fmt(sp):>20} {_fmt(kt):>20}   " + " ".join(f"{v:+.2f}" for v in sp))
    for t in TRUTHS:
        d = [corr[s][("ours", t)][0] - corr[s][("thuml", t)][0] for s in corr]
        wins = sum(v > 1e-12 for v in d), sum(v < -1e-12 for v in d)
        lines.append(f"{t}: ours beats thuml in {wins[0]} seeds, thuml beats ours in {wins[1]}, "
                     f"ties {len(d) - sum(wins)} (Spearman)")
    sp = [corr[s][("ours", "thuml")][0] for s in corr]
    lines.append(f"Spearman(ours, thuml) over the models: {_fmt(sp)}")
    gt = {t: [statistics.mean(o[t].values()) for o in per_seed.values()] for t in TRUTHS}
    lines.append("mean ground truth: " + ", ".join(f"{t} {statistics.mean(v):.3f}" for t, v in gt.items()))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.logme_forms", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--probe", type=int, default=150, help="probe samples n (<= 256, the smallest D)")
    ap.add_argument("--ft-epochs", type=int, default=30, help="fine-tuning epochs of the ground truth")
    ap.add_argument("--show-values", action="store_true", help="print every model's scores and truths")
    args = ap.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    t0 = time.perf_counter()
    per_seed = {}
    for s in args.seeds:
        per_seed[s] = run_seed(s, args.probe, ft_epochs=args.ft_epochs)
        if args.show_values:
            for m in per_seed[s]["ours"]:
                print(f"seed {s} {m:<18} D {per_seed[s]['D'][m]}  "
                      + "  ".join(f"{k} {per_seed[s][k][m]:.4g}" for k in FORMS + TRUTHS))
    print(f"logme_forms {date.today().isoformat()}  (1 thread, {time.perf_counter() - t0:.0f} s, "
          f"cpus={os.cpu_count()})")
    for line in report(per_seed, args.probe):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
