"""The public benchmarks that the report (``experiments.report``), the ablations
(``experiments.ablations``) and the budget runs (``experiments.budget``) evaluate, and where their
histories are read from."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from history.importers import get_importer
from history.store import HistoryStore

from .histories import load_history

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    importer: str
    folder: str  # under the data folder
    source: str
    protocol: str
    regime: str | None = None
    modality: str | None = None
    targets: dict = field(default_factory=dict)  # metric -> (op, value) reported honestly, never asserted
    note: str = ""
    #: "dev": configurations (the default included) are chosen on it; "test": only measured, never tuned on
    role: str = "test"
    metric: str | None = None  # the target metric when the source stores several


BENCHMARKS = {b.name: b for b in [
    Benchmark("tg-lodo", "TransferGraph-image, leave one dataset out", "transfergraph", "transfergraph-image",
              "transfergraph-image", "lodo",
              targets={"pearson": (">=", 0.85), "weighted_tau": (">=", 0.5), "regret@1": ("<=", 0.9)},
              note="food101 is excluded by the importer (runs at chance).", role="dev"),
    Benchmark("shift-vtab1k-lodo", "SHiFT VTAB-1k (19 image tasks), leave one dataset out", "shift", "shift",
              "shift", "lodo", regime="vtab-1k", modality="image",
              targets={"pearson": (">=", 0.6), "regret@1": ("<=", 8.0)}, role="dev"),
    Benchmark("parc-controlled-lodo", "PARC controlled benchmark, leave one dataset out", "parc", "parc",
              "parc-controlled", "lodo", targets={"pearson": (">=", 0.80)},
              note="voc2007 (multi-label mAP) is a different metric and is not pooled with accuracy.", role="dev"),
    Benchmark("parc-all-lodo", "PARC all models, leave one dataset out", "parc", "parc", "parc", "lodo", role="dev"),
    Benchmark("timm-setting1", "timm ImageNet-1k, setting 1 (unseen models on a seen dataset)", "timm", "timm",
              "timm", "setting1", targets={"pearson": (">=", 0.85)}),
    # test benchmarks added 2026-12-06, after the default was fixed on the four dev benchmarks above
    Benchmark("shift-full-lodo", "SHiFT full training sets (image tasks), leave one dataset out", "shift", "shift",
              "shift", "lodo", regime="full", modality="image"),
    Benchmark("vtab1k-lodo", "VTAB published results, VTAB-1k (16 upstream models x 19 tasks)", "vtab", "vtab",
              "vtab", "lodo", regime="vtab-1k"),
    Benchmark("vtab-full-lodo", "VTAB published results, full training sets (16 upstream models x 19 tasks)",
              "vtab", "vtab", "vtab", "lodo", regime="full"),
    Benchmark("twophase-cv-lodo", "two-phase-selection, 30 Hugging Face image models x 6 datasets",
              "two-phase", "two-phase-selection", "two-phase-selection", "lodo", modality="image",
              metric="accuracy"),
    Benchmark("twophase-nlp-lodo", "two-phase-selection, 39 Hugging Face text models x 19 accuracy tasks",
              "two-phase", "two-phase-selection", "two-phase-selection", "lodo", modality="text",
              metric="accuracy", note="cola (Matthews correlation) and stsb (a regression score) are other metrics "
                                      "and are not evaluated."),
    Benchmark("openclip-lodo", "open_clip zero-shot, 121 CLIP models x 27 top-1 datasets", "openclip", "openclip",
              "openclip", "lodo", regime="zero-shot", metric="accuracy",
              note="zero-shot: a regime of its own, never pooled with fine-tuning runs; the 8 datasets scored with "
                   "another main metric are not evaluated."),
]}

#: the benchmarks configurations are chosen on (the default included)
DEV_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.role == "dev")


def default_data_dir() -> Path:
    return Path(os.environ.get("RECOMMENDER_DATA", REPO.parent / "shared" / "data")).resolve()


def load_benchmark(bench: Benchmark, data: Path, store_dir: Path):
    """Import ``bench``'s history into a fresh SQLite store under ``store_dir`` (no source's scores or
    models leak into another benchmark) and load its history frame.

    Returns ``(history, notes, import seconds)``; the store is closed again."""
    import time

    db = Path(store_dir) / f"{bench.name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    store = HistoryStore(f"sqlite:///{db}")
    try:
        t0 = time.perf_counter()
        get_importer(bench.importer).run(store, Path(data) / bench.folder)
        import_s = time.perf_counter() - t0
        history, _, _, notes = load_history(store, source=bench.source, regime=bench.regime,
                                            modality=bench.modality, metric=bench.metric)
    finally:
        store.dispose()
    return history, notes, import_s
