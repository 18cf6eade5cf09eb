"""The public benchmarks that the report (``experiments.report``), the ablations
(``experiments.ablations``) and the budget runs (``experiments.budget``) evaluate, and where their
histories are read from."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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


BENCHMARKS = {b.name: b for b in [
    Benchmark("tg-lodo", "TransferGraph-image, leave one dataset out", "transfergraph", "transfergraph-image",
              "transfergraph-image", "lodo",
              targets={"pearson": (">=", 0.85), "weighted_tau": (">=", 0.5), "regret@1": ("<=", 1.0)},
              note="food101 is excluded by the importer (runs at chance)."),
    Benchmark("shift-vtab1k-lodo", "SHiFT VTAB-1k (19 image tasks), leave one dataset out", "shift", "shift",
              "shift", "lodo", regime="vtab-1k", modality="image", targets={"pearson": (">=", 0.6)}),
    Benchmark("parc-controlled-lodo", "PARC controlled benchmark, leave one dataset out", "parc", "parc",
              "parc-controlled", "lodo", targets={"pearson": (">=", 0.80)},
              note="voc2007 (multi-label mAP) is a different metric and is not pooled with accuracy."),
    Benchmark("parc-all-lodo", "PARC all models, leave one dataset out", "parc", "parc", "parc", "lodo"),
    Benchmark("timm-setting1", "timm ImageNet-1k, setting 1 (unseen models on a seen dataset)", "timm", "timm",
              "timm", "setting1", targets={"pearson": (">=", 0.85)}),
]}

#: inner folds of nested selection (report and ablations)
INNER_FOLDS = 3


def default_data_dir() -> Path:
    return Path(os.environ.get("RECOMMENDER_DATA", REPO.parent / "shared" / "data")).resolve()
