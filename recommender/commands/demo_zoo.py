"""``python -m recommender demo --zoo``: the whole loop offline, on a tiny zoo built on the spot.

1. build the zoo (:mod:`recommender.zoo`: 6 small CNNs pre-trained for about a second each on
   digits, shapes, stripes, textures), its history tasks and a new target task, and fine-tune
   every model on every history task (a real history, linear probes) -- once, under
   ``<home>/demo-zoo`` (``--zoo-dir``); re-running re-uses it;
2. ``train`` the default recommender on that history;
3. ``score`` the zoo's models on the new task (model-selection scores on a probe set);
4. ``search --budget 3``: fine-tune 3 models on the new task with the default strategy,
   learning from each result, and compare the best accuracy with chance.

Nothing is downloaded. The zoo has its own home and store (``<zoo-dir>/history.db``), so the
TransferGraph demo's store is left alone.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from history.config import resolve_home
from history.errors import RecommenderError
from recommender.cli import main
from recommender.finetune import TrialConfig
from recommender.zoo import build_bed, zoo_models_meta

#: history tasks of the zoo (fine-tuned for the history) and the new target task (10 digit classes)
TASKS = ("digits-lo", "stripes-fine", "textures-faint")
TARGET, TARGET_CLASSES = "digits-new", 10
#: the demo's fine-tuning grid: a linear probe, which the tiny CNNs' features make well above chance
GRID = ("--mode", "linear", "--lrs", "3e-2", "--epochs", "8", "--patience", "3")


def _bed(root: Path) -> dict:
    """The zoo's specs, building the bed first when ``root`` holds no finished one (a half-built
    one, e.g. interrupted, is removed and built again)."""
    import shutil

    done = root / "READY"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        build_bed(root, list(TASKS), TrialConfig(lr=3e-2, epochs=8, mode="linear", patience=3),
                  images=80, new_images=300)
        done.write_text("built by `python -m recommender demo --zoo`\n")
    return {m["name"]: f"{m['name']}=torchscript:{root / 'zoo' / (m['name'] + '.pt')}"
            for m in zoo_models_meta(root / "zoo")}


def _step(title: str, argv: list) -> tuple[int, str]:
    import contextlib
    import io

    print(title, flush=True)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    out = buf.getvalue()
    return rc, out


def run_zoo(args) -> int:
    t0 = time.perf_counter()
    root = Path(args.zoo_dir).resolve() if args.zoo_dir else resolve_home(args.home) / "demo-zoo"
    print(f"[1/4] the tiny offline zoo under {root}" + ("" if (root / "READY").exists() else
                                                     " (building it: 6 CNNs, 3 history tasks, real fine-tunes)"))
    specs = _bed(root)
    print(f"      {len(specs)} models, history of {len(TASKS)} tasks ({', '.join(TASKS)}); new task {TARGET!r} "
          f"({TARGET_CLASSES} classes) ({time.perf_counter() - t0:.0f} s)")
    base = ["--home", str(root), "--store", f"sqlite:///{root / 'history.db'}"]
    ml = ["--no-mlflow"] if args.no_mlflow else []
    data = str(root / "data" / TARGET)
    models = ",".join(specs.values())
    rc, out = _step("[2/4] train the default recommender on the zoo's history",
                    [*base, "train", "--cv-folds", "0", *ml])
    if rc:
        raise RecommenderError(f"demo --zoo: train failed:\n{out}")
    rc, out = _step(f"[3/4] score the zoo's models on {TARGET!r}",
                    [*base, "score", "--dataset", TARGET, "--data", data, "--models", models, "--no-progress"])
    print("\n".join("      " + line for line in out.rstrip().splitlines()[:14]))
    if rc:
        raise RecommenderError(f"demo --zoo: score failed (exit {rc})")
    rc, out = _step(f"[4/4] search --budget 3 on {TARGET!r} (default strategy; {' '.join(GRID)})",
                    [*base, "search", "--dataset", TARGET, "--data", data, "--models", models, "--budget", "3",
                     *GRID, *ml, "--format", "json"])
    if rc:
        raise RecommenderError(f"demo --zoo: search failed (exit {rc}):\n{out}")
    res = json.loads(out)
    for p in res["picks"]:
        acc = "failed" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}%"
        pred = "" if p["predicted"] is None else f" (predicted {100 * p['predicted']:.1f}%)"
        print(f"      {p['step']}. {p['model']}: {acc}{pred}")
    best = res["best"]
    chance = 1 / TARGET_CLASSES
    if best:
        print(f"      best: {best['model']} at {100 * best['accuracy']:.1f}% (chance {100 * chance:.0f}%), strategy "
              f"{res['strategy']}")
    print(f"\ndemo --zoo done in {time.perf_counter() - t0:.0f} s, offline. Next: `python -m recommender --home "
          f"{root} search --dataset {TARGET} --data {data} --models ... --budget 5` resumes and extends it.")
    return 0 if best and best["accuracy"] > chance else 1
