"""Download the public fine-tuning histories and import them (``history pull <name>``).

Each entry of :data:`PUBLIC_HISTORIES` lists the files of one public history, pinned to a
commit of its origin repository (raw GitHub URLs) with their SHA-256. :func:`pull`
downloads them into a cache folder (``<home>/cache/<name>/``), verifies each checksum
(a mismatching file is deleted and reported), reuses cached files that still verify, and
runs the history's importer. ``from_dir`` imports a local mirror instead (no network),
``base_url`` points the downloads at another server holding the same file names.
:func:`pull_all` pulls every entry (``history pull all``).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .config import cache_dir as default_cache_dir
from .errors import HistoryImportError, NotFoundError, closest
from .importers import get_importer
from .importers.base import ImportReport, sha256_of

_GH = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public history: local file name, pinned URL, expected SHA-256 (or None)."""

    name: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class PublicHistory:
    """A public fine-tuning history: where its files live and how to import them."""

    name: str
    description: str
    importer: str
    files: tuple[RemoteFile, ...]
    options: dict = field(default_factory=dict)
    origin: str = ""
    license: str = "none stated (published research results)"


def _gh(repo: str, commit: str, path: str, sha: str | None, name: str | None = None) -> RemoteFile:
    return RemoteFile(name=name or path.rsplit("/", 1)[-1], url=f"{_GH}/{repo}/{commit}/{path}", sha256=sha)


_TG_ZLIZY = ("zLizy/transfergraph", "81957403ff293facf2e6c0573ebb537032094cb2")
_TG_ORG = ("TransferGraph/transfergraph", "0458aff3ae6832926bed0bac515f243f99a98df0")
_TG_IMG = "resources/experiments/image_classification"
_TG_TXT = "resources/experiments/sequence_classification"
_VTAB = ("google-research/task_adaptation", "c566d649f57e8e98e531bacf0e25309d04214bc6")
_TWO = ("plasware/two-phase-selection", "4d6fec7810eeda5207bded93f43b1a934af28b5b")
_OCLIP = ("mlfoundations/open_clip", "f862f86cd92123615a8695ce8bcb6ecc066af452")
_TIMM = "huggingface/pytorch-image-models"
_TIMM_COMMIT = "90cae8c5ab83d2d7e23b1fb2bab1559bfdcbc7e9"

#: The registry of public histories (name -> entry).
PUBLIC_HISTORIES: dict[str, PublicHistory] = {h.name: h for h in [
    PublicHistory(
        name="transfergraph-image",
        description="TransferGraph image classification: ~2,250 full fine-tuning runs of ~180 Hugging Face "
                    "image models on 13 datasets, plus LogME / regularised H-scores",
        importer="transfergraph", options={"layout": "image"},
        origin="GitHub zLizy/transfergraph and TransferGraph/transfergraph, " + _TG_IMG,
        files=(
            _gh(*_TG_ZLIZY, f"{_TG_IMG}/records.csv",
                "59670b4959ad1a25d7c873d092a89914707038b67f23dcdf6a09a5dbaac87747"),
            _gh(*_TG_ZLIZY, f"{_TG_IMG}/model_config_dataset.csv",
                "ae18ff2ece00fef61cda755038122f306a499b6c8d82d36530765e862ab2747b"),
            _gh(*_TG_ZLIZY, f"{_TG_IMG}/target_dataset_features.csv",
                "b81b62e07e97289a794b268c974e33c9d50aea4c06b12f1db5169b3dbafacc7f"),
            _gh(*_TG_ORG, f"{_TG_IMG}/transferability_score_records.csv",
                "5803e4e3c08c53d95a6e451fc1509eb2a83494ea3ff1094db278e0f0a1875de9"),
        ),
    ),
    PublicHistory(
        name="transfergraph-text",
        description="TransferGraph sequence classification: full and LoRA fine-tuning runs of Hugging Face "
                    "text models on GLUE / tweet_eval / ... plus LogME scores (checksums not pinned)",
        importer="transfergraph", options={"layout": "text"},
        origin="GitHub zLizy/transfergraph, " + _TG_TXT,
        files=tuple(_gh(*_TG_ZLIZY, f"{_TG_TXT}/{f}", None) for f in (
            "records.csv", "model_config_dataset.csv", "target_dataset_features.csv",
            "transferability_score_records.csv")),
    ),
    PublicHistory(
        name="shift",
        description="SHiFT: 9,629 fine-tuning runs of ~290 image and ~170 text models on 19 VTAB tasks and "
                    "11 text tasks (VTAB-1k, full and 80% regimes)",
        importer="shift", origin="GitHub DS3Lab/shift",
        files=(
            _gh("DS3Lab/shift", "7bcefaa5db22b37812f0a7a018789e077d72abf6", "data/ftrecords.csv",
                "3834c1acff22ffa85c4c8140b780b3424261b7b9d53b9cbe42259b9801a127db"),
            _gh("DS3Lab/shift", "9e499ce784a4f666680c5d2cd55e7421767a6a86",
                "helper_scripts/data/huggingface_cv_models.csv",
                "48a67cb0c31d1674167e07a6047f63c4bc5bd138110a5e65add1b09fe07eecb3"),
        ),
    ),
    PublicHistory(
        name="parc",
        description="PARC oracles: fine-tuned accuracy of 71 (architecture, source) models on 7 targets, "
                    "plus the controlled 4 x 8 benchmark",
        importer="parc", origin="GitHub dbolya/parc, oracles/",
        files=(
            _gh("dbolya/parc", "b05d06288203905d2a57f19ddb83edddc80c182c", "oracles/all.csv",
                "1edb1115e9bffbf260c694843089946947e9ff97a16e83ab210fecfdf3763436"),
            _gh("dbolya/parc", "b05d06288203905d2a57f19ddb83edddc80c182c", "oracles/controlled.csv",
                "07db47bb908ab6e2639f87f35b74f08ed1c39b3225b05daa913cc4fa468ed8f2"),
        ),
    ),
    PublicHistory(
        name="timm",
        description="timm ImageNet-1k validation results of ~1,550 (model, resolution) pairs with GMACs and "
                    "pretraining domain",
        importer="timm", origin="GitHub huggingface/pytorch-image-models, results/", license="Apache-2.0",
        files=(
            _gh(_TIMM, _TIMM_COMMIT, "results/results-imagenet.csv",
                "30972bf7c7ab451bbd4480ec6116b13d0a84441c57bbc946896fd312264acfcd"),
            _gh(_TIMM, _TIMM_COMMIT, "results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv",
                "7ef180f30bfcf3271aed993ddff2114c88a83b58e6f7e56acbd76e702e6f3136"),
            _gh(_TIMM, "1331c145a353959a4b0d7b7e119a55ae0f4a98a6", "results/model_metadata-in1k.csv",
                "5e221773779c10edb5c6829f7fd52db3f69d8455020cc7e49607175ad4b2ecb7"),
        ),
    ),
    PublicHistory(
        name="vtab",
        description="VTAB published results: 16 ImageNet upstream models (supervised, semi-, self-supervised, "
                    "generative, from scratch) fine-tuned on 19 VTAB tasks, VTAB-1k and full regimes",
        importer="vtab", origin="GitHub google-research/task_adaptation, docs/data/results.csv",
        license="Apache-2.0",
        files=(
            _gh(*_VTAB, "docs/data/results.csv",
                "a08ad693387bb120f620c91b960350c3dcdea0945be7e56353b6aed5cbd390b1"),
        ),
    ),
    PublicHistory(
        name="two-phase-selection",
        description="two-phase-selection accuracy matrices: 30 HF image models x 6 datasets and 39 HF text "
                    "models x 21 tasks, fine-tuned offline (split sizes unstated: regime finetune-unspecified)",
        importer="two-phase", origin="GitHub plasware/two-phase-selection, coarse_recall/{CV,NLP}_coarse_recall/",
        license="MIT",
        files=(
            _gh(*_TWO, "coarse_recall/CV_coarse_recall/datasets.txt",
                "42a4f5e6141dcb588ca917f289dea36e62d05303830c6f61c5673fe3ce4c13f6", name="CV/datasets.txt"),
            _gh(*_TWO, "coarse_recall/CV_coarse_recall/matrix.txt",
                "69301ab71bd01ad1654c471ccda80b813b957c1e41f3bf5123b03ec6a5608d0a", name="CV/matrix.txt"),
            _gh(*_TWO, "coarse_recall/NLP_coarse_recall/datasets.txt",
                "eaddf291dae75d30c2797d01c374ee09d7705f0ab52f8ba4949484eec2d4b1ca", name="NLP/datasets.txt"),
            _gh(*_TWO, "coarse_recall/NLP_coarse_recall/matrix.txt",
                "cca6f1f18001d0a96ba60e9c59585e2f7a59feeb978b8e2af2ad4f9f9dc85cc5", name="NLP/matrix.txt"),
        ),
    ),
    PublicHistory(
        name="openclip",
        description="open_clip zero-shot results: 121 CLIP models (architecture x pretrained tag) on the 35 "
                    "DataComp classification datasets, regime zero-shot, with the model profile",
        importer="openclip", origin="GitHub mlfoundations/open_clip, docs/", license="MIT-style (open_clip LICENSE)",
        files=(
            _gh(*_OCLIP, "docs/openclip_classification_results.csv",
                "9cc4f1ca941d99004819310175f19b6f9031c1590d96650ae72a42f7daba93ac"),
            _gh(*_OCLIP, "docs/model_profile.csv",
                "6f0975464d02d31a4c7cfca79a100c47c0d01cf47222f4fa5b9bec5609677285"),
        ),
    ),
]}


def get_history(name: str) -> PublicHistory:
    if name not in PUBLIC_HISTORIES:
        hint = closest(name, PUBLIC_HISTORIES)
        raise NotFoundError(
            f"unknown public history {name!r}"
            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
            + f"; valid names: {', '.join(PUBLIC_HISTORIES)}")
    return PUBLIC_HISTORIES[name]


def _download(url: str, dest: Path, *, timeout: float, progress: bool, label: str) -> str:
    """Stream ``url`` into ``dest`` (via a temporary file); return the SHA-256 of the bytes."""
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "finetune-recommender"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = resp.headers.get("Content-Length")
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=label, leave=False)
            try:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise HistoryImportError(
            f"cannot download {url}: {reason}. Check the network, or import a local copy with "
            "history pull NAME --from FOLDER (Python: from_dir=FOLDER)") from None
    os.replace(tmp, dest)
    return h.hexdigest()


def fetch(history: PublicHistory, *, cache_dir=None, base_url: str | None = None, progress: bool = True,
          timeout: float = 60.0) -> tuple[Path, list[str]]:
    """Make sure every file of ``history`` is in the cache and verified; return (folder, notes)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / history.name
    folder.mkdir(parents=True, exist_ok=True)
    notes = []
    for f in history.files:
        dest = folder / f.name  # a name may hold a sub-folder (two-phase-selection: CV/matrix.txt)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            if f.sha256 is None:
                notes.append(f"{f.name}: reused cached copy (no pinned checksum, not verified)")
                continue
            if sha256_of(dest) == f.sha256:
                notes.append(f"{f.name}: reused verified cached copy")
                continue
            dest.unlink()  # stale or corrupt cache entry: download again
        url = f"{base_url.rstrip('/')}/{f.name}" if base_url else f.url
        got = _download(url, dest, timeout=timeout, progress=progress, label=f.name)
        if f.sha256 is not None and got != f.sha256:
            dest.unlink(missing_ok=True)
            raise HistoryImportError(
                f"{f.name} downloaded from {url} has sha256 {got}, expected {f.sha256}; the file was "
                "discarded and nothing was imported. The origin may have changed: download the file yourself, "
                "check it, and import it with history pull NAME --from FOLDER (Python: from_dir=FOLDER).")
        notes.append(f"{f.name}: downloaded from {url}"
                     + (" (sha256 verified)" if f.sha256 else " (no pinned checksum, not verified)"))
    return folder, notes


def pull(store, name: str, *, from_dir=None, cache_dir=None, base_url: str | None = None, progress: bool = True,
         timeout: float = 60.0, **importer_options) -> ImportReport:
    """Fetch the public history ``name`` (or read it from ``from_dir``) and import it into ``store``.

    ``from_dir`` may be the history's folder or its parent (``<from_dir>/<name>/``); its files
    are compared with the pinned checksums and a difference is reported as a note.
    ``importer_options`` override the entry's importer options (e.g. ``include_food101=True``).
    Importing is idempotent: pulling twice adds no jobs.
    """
    h = get_history(name)
    if from_dir is not None:
        folder = Path(from_dir)
        if (folder / h.name).is_dir():
            folder = folder / h.name
        if not folder.is_dir():
            raise HistoryImportError(f"{folder}: folder not found (expected a local copy of {h.name}: "
                                     f"{', '.join(f.name for f in h.files)})")
        missing = [f.name for f in h.files if not (folder / f.name).exists()]
        if missing:
            raise HistoryImportError(f"{folder}: missing file(s) {', '.join(missing)} of public history {h.name}")
        notes = []
        for f in h.files:
            if f.sha256 and sha256_of(folder / f.name) != f.sha256:
                notes.append(f"{f.name}: differs from the pinned public file (sha256 mismatch); imported as is")
    else:
        folder, notes = fetch(h, cache_dir=cache_dir, base_url=base_url, progress=progress, timeout=timeout)
    options = {**h.options, **importer_options}
    report = get_importer(h.importer).run(store, folder, **options)
    report.notes = [f"public history {h.name} ({h.origin})", *notes, *report.notes]
    return report


def list_histories() -> list[dict]:
    """Rows describing the registry (for ``history pull --list``)."""
    return [{"name": h.name, "importer": h.importer, "files": len(h.files),
             "verified": all(f.sha256 for f in h.files), "description": h.description}
            for h in PUBLIC_HISTORIES.values()]


def pull_all(store, *, from_dir=None, cache_dir=None, base_url: str | None = None, progress: bool = True,
             timeout: float = 60.0, include_food101: bool = False) -> tuple[dict[str, ImportReport], list[str]]:
    """Pull every public history, in registry order; return ({name: report}, skipped).

    With ``from_dir``, a history whose folder ``<from_dir>/<name>/`` is absent is skipped (the
    reason is listed in ``skipped``) instead of downloaded: a local mirror may hold only some.
    ``cache_dir`` / ``base_url`` name a parent: each history uses ``<cache_dir>/<name>`` and
    ``<base_url>/<name>``. ``include_food101`` goes to ``transfergraph-image`` only. Each history
    is its own transaction: one that fails raises after the earlier ones were imported."""
    reports, skipped = {}, []
    for name, h in PUBLIC_HISTORIES.items():
        if from_dir is not None and not (Path(from_dir) / name).is_dir():
            skipped.append(f"{name}: no folder {Path(from_dir) / name} (pull it by name to download it)")
            continue
        image_tg = h.importer == "transfergraph" and h.options.get("layout") == "image"
        opts = {"include_food101": True} if include_food101 and image_tg else {}
        reports[name] = pull(
            store, name, from_dir=None if from_dir is None else Path(from_dir) / name,
            cache_dir=None if cache_dir is None else Path(cache_dir) / name,
            base_url=None if base_url is None else f"{base_url.rstrip('/')}/{name}",
            progress=progress, timeout=timeout, **opts)
    return reports, skipped
