"""The fine-tuning runner: fine-tune a pretrained model on a labelled dataset, for real.

Data (:func:`load_task`): an image folder (``root/<class>/<image>``), a CSV of image paths
and labels (a ``path`` column; relative paths are read from the CSV's folder), or a CSV
of texts and labels (``text``, ``label``). A seeded, stratified train / validation split
is drawn once per (data, seed).

Models: any spec the extraction adapters load (:mod:`features.extract`: TorchScript,
torch modules, timm, Hugging Face, sentence models). The adapter gives the features the
old classifier saw; a new linear head is put on top. ``mode="full"`` trains backbone and
head together (AdamW); ``mode="linear"`` (a linear probe) computes the frozen features
once and trains the head only. Validation accuracy is measured after every epoch;
training stops early after ``patience`` epochs without improvement and the best epoch's
weights are kept. On CUDA the forward passes run in mixed precision (bfloat16 autocast).

Every trial is a job in the history store, written in two atomic steps: inserted as
``running`` (with host and process id) before training, then updated to ``completed``
(value = best validation accuracy, learning curve, duration, weights path) or ``failed``
(with the error). A process killed with ``kill -9`` leaves a ``running`` job behind; the
next run marks it ``failed`` (its process is gone) and redoes the trial, and trials that
already completed with the same model, data and hyper-parameters are reused, not re-run.
Each trial is also an MLflow run (experiment ``recommender-finetune``; with the local
executor it is created, RUNNING, when the trial starts, and a run left RUNNING by a killed
process is ended as FAILED by the next call on that dataset), and its weights
are saved under ``<home>/finetuned/<dataset>/<model>/<trial>/`` as ``weights.npz``
(state dict arrays, no pickle) next to ``trial.json``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from features.data import DataError, LoadedData, load_text_csv, scan_image_folder
from history.config import resolve_home
from history.errors import RecommenderError

log = logging.getLogger(__name__)

SOURCE = "recommender-finetune"
EXPERIMENT = "recommender-finetune"
MODES = ("full", "linear")
#: test hook: when this file exists, every training epoch sleeps this long (kill -9 tests)
SLOW_ENV = "RECOMMENDER_TEST_EPOCH_SLEEP"
#: test hook: a folder where every trial task writes ``<pid>-<trial key>`` when it starts (worker-kill tests)
PID_DIR_ENV = "RECOMMENDER_TEST_PID_DIR"


class FineTuneError(RecommenderError):
    """A fine-tune cannot be set up (bad data, model, or hyper-parameters)."""


# ============================================================================ data
@dataclass
class TaskData:
    """Labelled data for a fine-tune: ``inputs`` (image paths or texts), integer ``labels``."""

    inputs: list
    labels: np.ndarray
    class_names: list
    kind: str  # images | text
    ref: str
    notes: list = field(default_factory=list)
    #: set by :meth:`snapshot`: the fingerprint and splits, computed once for the trials of one call
    _memo: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self):
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def snapshot(self) -> "TaskData":
        """A copy for the trials of one call: its fingerprint (which reads every image file's
        size) is computed now, once, and its train / validation splits once per (fraction, seed).
        A snapshot of a snapshot keeps what was computed (``search`` takes one for all its calls)."""
        c = replace(self)
        c._memo = dict(self._memo) if self._memo is not None else {"fingerprint": self.fingerprint()}
        return c

    def split(self, val_fraction: float, seed: int):
        """:func:`split_indices` of the labels (memoized in a :meth:`snapshot`)."""
        if self._memo is None:
            return split_indices(self.labels, val_fraction, seed)
        key = ("split", float(val_fraction), int(seed))
        if key not in self._memo:
            self._memo[key] = split_indices(self.labels, val_fraction, seed)
        tr, va = self._memo[key]
        return tr.copy(), va.copy()

    def fingerprint(self) -> str:
        """Content identity of the data (inputs, labels; file sizes for images)."""
        if self._memo is not None:
            return self._memo["fingerprint"]
        h = hashlib.sha256()
        h.update(self.kind.encode())
        for x, y in zip(self.inputs, self.labels):
            h.update(str(x).encode())
            if self.kind == "images":
                try:
                    h.update(str(os.path.getsize(x)).encode())
                except OSError:
                    pass
            h.update(str(int(y)).encode())
        return h.hexdigest()[:16]


def load_task(path, *, text_column: str = "text", label_column: str = "label", path_column: str = "path") -> TaskData:
    """Read an image folder, a CSV of image paths + labels, or a CSV of texts + labels."""
    p = Path(path).expanduser()
    if p.is_dir():
        d = scan_image_folder(p)
        return TaskData(list(d.inputs), np.asarray(d.labels), list(d.class_names), "images", str(p), d.notes)
    if not p.is_file():
        raise DataError(f"data path {p} does not exist (expected an image folder or a .csv of image paths or texts "
                        "with labels)")
    if p.suffix.lower() not in (".csv", ".tsv"):
        raise DataError(f"cannot fine-tune on {p}: use an image folder (root/<class>/<image>), a .csv with "
                        f"'{path_column}' and '{label_column}' columns, or a .csv with '{text_column}' and "
                        f"'{label_column}' columns")
    import pandas as pd

    sep = "\t" if p.suffix.lower() == ".tsv" else ","
    try:
        head = pd.read_csv(p, sep=sep, nrows=0, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse {p} as CSV: {exc}") from None
    if path_column in head.columns:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
        if label_column not in df.columns:
            raise DataError(f"{p} has no column {label_column!r}; columns are {list(df.columns)}")
        paths = df[path_column].str.strip()
        labels = df[label_column].str.strip()
        bad = (paths == "") | (labels == "")
        notes = [f"{int(bad.sum())} row(s) of {p} dropped for an empty path or label"] if bad.any() else []
        paths, labels = paths[~bad], labels[~bad]
        full = [str((p.parent / x) if not Path(x).is_absolute() else Path(x)) for x in paths]
        missing = [f for f in full if not Path(f).is_file()]
        if missing:
            raise DataError(f"{len(missing)} image file(s) listed in {p} do not exist, e.g. {missing[0]}")
        if not full:
            raise DataError(f"{p} has no rows with both {path_column!r} and {label_column!r}")
        names, codes = np.unique(labels.to_numpy(), return_inverse=True)
        return TaskData(full, codes.astype(np.int64), [str(n) for n in names], "images", str(p), notes)
    d: LoadedData = load_text_csv(p, text_column=text_column, label_column=label_column)
    return TaskData(list(d.inputs), np.asarray(d.labels), list(d.class_names), "text", str(p), d.notes)


def split_indices(labels, val_fraction: float, seed: int):
    """Seeded stratified train / validation split (every class keeps >= 1 training sample)."""
    labels = np.asarray(labels)
    if not 0 < val_fraction < 1:
        raise FineTuneError(f"validation fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(val_fraction * len(idx)))
        k = min(k, len(idx) - 1)
        va += idx[:k].tolist()
        tr += idx[k:].tolist()
    if not va:
        raise FineTuneError(f"the data ({len(labels)} samples) are too small for a validation split of "
                            f"{val_fraction:.0%}; add samples or raise --val-fraction")
    return np.sort(np.asarray(tr)), np.sort(np.asarray(va))


# ============================================================================ config / results
@dataclass(frozen=True)
class TrialConfig:
    """Hyper-parameters of one fine-tuning trial."""

    lr: float = 1e-3
    epochs: int = 5
    mode: str = "full"
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 2
    weight_decay: float = 0.0

    def check(self):
        if self.mode not in MODES:
            raise FineTuneError(f"unknown fine-tune mode {self.mode!r}; valid: {', '.join(MODES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FineTuneError(f"learning rate must be > 0, got {self.lr}")
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise FineTuneError(f"epochs and batch size must be >= 1, got {self.epochs}, {self.batch_size}")
        return self

    def hparams(self) -> dict:
        return asdict(self)


def make_grid(lrs, epochs, **common) -> list[TrialConfig]:
    """The (learning rate x epochs) grid as trial configs."""
    return [TrialConfig(lr=float(lr), epochs=int(e), **common).check() for lr in lrs for e in epochs]


@dataclass
class TrialResult:
    model: str
    spec: str
    dataset: str
    config: TrialConfig
    status: str  # completed | failed
    value: float | None = None  # best validation accuracy
    curve: list = field(default_factory=list)  # validation accuracy per epoch
    best_epoch: int | None = None
    weights: str | None = None
    job_id: int | None = None
    duration_s: float = 0.0
    timings: dict = field(default_factory=dict)
    error: str | None = None
    reused: bool = False
    mlflow_run: str | None = None


def trial_key(spec: str, dataset: str, fingerprint: str, config: TrialConfig) -> str:
    blob = json.dumps([spec, dataset, fingerprint, config.hparams()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ============================================================================ model plumbing
def _backbone(adapter):
    for attr in ("module", "model"):
        m = getattr(adapter, attr, None)
        if m is not None:
            return m
    raise FineTuneError(f"model {adapter.name!r} ({adapter.kind}) has no trainable module")


def _prepare(adapter, kind: str, device):
    """Load the adapter for ``kind`` on ``device``; return the backbone module."""
    from features.extract import TorchAdapter, find_feature_layer

    adapter.device = device
    adapter._load(kind, device)
    if isinstance(adapter, TorchAdapter):
        adapter.layer_name, adapter._hooked = find_feature_layer(adapter.module, adapter.layer)
        adapter._captured = {}
        if adapter._hooked is not None and not getattr(adapter, "_ft_hook", None):
            def hook(_m, inp, out):
                adapter._captured["x"] = out if adapter.layer_output else inp[0]
            adapter._ft_hook = adapter._hooked.register_forward_hook(hook)
    return _backbone(adapter)


def _features(adapter, batch):
    f, _ = adapter.forward_batch(batch)
    return f.reshape(f.shape[0], -1).float()


def _index(batch, idx):
    if isinstance(batch, dict):
        return {k: v[idx] for k, v in batch.items()}
    return batch[idx]


_DECODED: dict = {}


def _base_collate():
    from features.extract import Adapter

    return Adapter.collate


class _Inputs:
    """Model-ready inputs: images decoded once (a tensor or dict of tensors), texts tokenized per batch."""

    def __init__(self, adapter, data: TaskData):
        import torch

        self.adapter, self.kind = adapter, data.kind
        if data.kind == "images":
            # decoded images are kept for the next trial on the same data with the same preprocessing
            # (a search fine-tunes many models on one dataset)
            key = None
            if type(adapter).collate is _base_collate():
                key = (data.fingerprint(), str(adapter.override_size or adapter.image_size), adapter.channels,
                       tuple(adapter.mean), tuple(adapter.std))
            if key is not None and key in _DECODED:
                self.x = _DECODED[key].to(adapter.device)
                return
            parts = [adapter.collate(data.inputs[i:i + 256], "images") for i in range(0, len(data), 256)]
            if isinstance(parts[0], dict):
                self.x = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            else:
                self.x = torch.cat(parts)
                if key is not None:
                    _DECODED.clear()  # one dataset at a time: bounded memory
                    _DECODED[key] = self.x.cpu()
        else:
            self.x = list(data.inputs)

    def batch(self, idx):
        if self.kind == "images":
            return _index(self.x, idx)
        return self.adapter.collate([self.x[i] for i in idx], "text")


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _state_numpy(module) -> dict:
    """A copy of the module's state as arrays. A copy: on the CPU ``.float().cpu().numpy()`` of a
    float32 tensor shares its memory, so later optimizer steps (and the restore of the
    pretrained weights after a full fine-tune) would change the "best epoch" weights."""
    return {k: np.array((v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy(), copy=True)
            for k, v in module.state_dict().items()}


def _seed(seed: int, device) -> None:
    """Seed torch and numpy for a trial on ``device``.

    On the CPU only the CPU generator is seeded: ``torch.manual_seed`` also queues a seed for
    CUDA, and while CUDA is not initialized that formats the whole call stack (about 10-20 ms
    per trial here); the CPU generator's state is the same either way."""
    import torch

    if device.type == "cpu":
        torch.default_generator.manual_seed(int(seed))
    else:
        torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))


def _epoch_sleep():
    flag = os.environ.get(SLOW_ENV)
    if flag and Path(flag).exists():
        time.sleep(float(Path(flag).read_text().strip() or "60"))


# ============================================================================ training
def train_classifier(adapter, data: TaskData, config: TrialConfig, *, device="auto", progress=None,
                     restore: bool = True) -> dict:
    """Fine-tune ``adapter``'s model with a new head; return curve, best epoch and weights.

    ``progress(epoch, val_acc)`` is called after every epoch. Timings: ``train_s`` (forward /
    backward passes, including the frozen feature pass of a linear probe), ``eval_s``
    (validation passes), ``best_s`` (copying the best epoch's weights), ``data_s`` (decoding
    images), ``load_s`` (loading the model).
    A full fine-tune puts the model's pretrained weights back afterwards (the adapter may be
    used by the next trial) unless ``restore`` is False (no later trial uses this adapter).
    """
    from features.extract import resolve_device

    config.check()
    if data.num_classes < 2:
        raise FineTuneError(f"the data have {data.num_classes} class; a classifier needs at least 2")
    if adapter.modality == "image" and data.kind == "text":
        raise FineTuneError(f"model {adapter.name!r} is an image model but the data are texts")
    if adapter.modality == "text" and data.kind == "images":
        raise FineTuneError(f"model {adapter.name!r} is a text model but the data are images")
    dev = resolve_device(device)
    _seed(config.seed, dev)
    timings = {}
    t = time.perf_counter()
    backbone = _prepare(adapter, data.kind, dev)
    timings["load_s"] = time.perf_counter() - t
    initial = None
    if config.mode == "full" and restore:  # the adapter may be reused by the next trial: restore its weights after
        initial = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    try:
        return _train(adapter, backbone, data, config, dev, timings, progress)
    finally:
        if initial is not None:
            backbone.load_state_dict(initial)


def _train(adapter, backbone, data, config, dev, timings, progress):
    import torch
    from torch import nn

    t = time.perf_counter()
    inputs = _Inputs(adapter, data)
    timings["data_s"] = time.perf_counter() - t
    tr, va = data.split(config.val_fraction, config.seed)
    y = torch.as_tensor(data.labels, dtype=torch.long, device=dev)
    gen = torch.Generator().manual_seed(config.seed)
    bs = int(config.batch_size)
    train_s = eval_s = best_s = 0.0

    t = time.perf_counter()
    backbone.eval()
    with torch.no_grad(), _autocast(dev):
        probe = _features(adapter, inputs.batch(tr[: min(len(tr), 2)]))
    dim = probe.shape[1]
    head = nn.Linear(dim, data.num_classes).to(dev)
    linear = config.mode == "linear"
    if linear:
        with torch.no_grad(), _autocast(dev):
            feats = torch.cat([_features(adapter, inputs.batch(np.arange(i, min(i + 256, len(data)))))
                               for i in range(0, len(data), 256)]).float()
        params = list(head.parameters())
    else:
        for p in backbone.parameters():
            p.requires_grad_(True)
        params = [p for p in backbone.parameters() if p.is_floating_point()] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    train_s += time.perf_counter() - t

    def logits_of(idx, train: bool):
        if linear:
            return head(feats[torch.as_tensor(idx, device=dev)])
        with _autocast(dev):
            return head(_features(adapter, inputs.batch(idx)).float())

    curve, losses = [], []
    best, best_epoch, best_state, bad = -1.0, None, None, 0
    for epoch in range(int(config.epochs)):
        t = time.perf_counter()
        if not linear:
            backbone.train()
        head.train()
        total, n = 0.0, 0
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(logits_of(idx, True), y[torch.as_tensor(idx, device=dev)])
            if not torch.isfinite(loss):
                raise FineTuneError(f"the training loss became {loss.item()} at epoch {epoch + 1}; "
                                    f"lower the learning rate (now {config.lr:g})")
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        _epoch_sleep()
        train_s += time.perf_counter() - t
        t = time.perf_counter()
        backbone.eval()
        head.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(va), 256):
                idx = va[i:i + 256]
                pred = logits_of(idx, False).argmax(1)
                correct += int((pred == y[torch.as_tensor(idx, device=dev)]).sum())
        acc = correct / len(va)
        curve.append(acc)
        losses.append(total / max(n, 1))
        eval_s += time.perf_counter() - t
        if acc > best:
            t = time.perf_counter()
            best, best_epoch, bad = acc, epoch + 1, 0
            best_state = ({"head": _state_numpy(head)} if linear else
                          {"head": _state_numpy(head), "backbone": _state_numpy(backbone)})
            best_s += time.perf_counter() - t
        else:
            bad += 1
        if progress is not None:
            progress(epoch + 1, acc)
        if bad >= int(config.patience):
            break
    timings.update(train_s=train_s, eval_s=eval_s, best_s=best_s)
    return {"value": best, "curve": curve, "train_loss": losses, "best_epoch": best_epoch, "state": best_state,
            "feature_dim": int(dim), "n_train": int(len(tr)), "n_val": int(len(va)), "timings": timings}


def save_weights(folder: Path, state: dict, info: dict) -> Path:
    """Write ``weights.npz`` (``head/...``, ``backbone/...`` arrays) and ``trial.json`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{part}/{k}": v for part, sd in state.items() for k, v in sd.items()}
    tmp = folder / f".weights.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / "weights.npz")
    tmpj = folder / f".trial.{os.getpid()}.tmp"
    tmpj.write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
    os.replace(tmpj, folder / "trial.json")
    return folder / "weights.npz"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[-80:]


def weights_dir(home, dataset: str, model: str, key: str) -> Path:
    return resolve_home(home) / "finetuned" / _safe(dataset) / _safe(model) / key


# ============================================================================ store + MLflow
def process_alive(extra: dict) -> bool:
    """Whether the process recorded in a running job's ``extra`` (host, pid) still runs."""
    if extra.get("host") != socket.gethostname():
        return True  # another machine: cannot tell, leave it
    pid = extra.get("pid")
    if not pid:
        return False
    if int(pid) == os.getpid():
        return False  # our own leftover from an earlier, interrupted call in this process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) is not running
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def completed_trials(store, dataset: str) -> dict:
    """The completed jobs on ``dataset`` by trial key (one query; the first one of a key wins)."""
    out: dict = {}
    for r in store.runs_frame(dataset=dataset, status="completed").itertuples(index=False):
        ex = r.extra if isinstance(r.extra, dict) else {}
        if ex.get("trial") is not None:
            out.setdefault(ex["trial"], r)
    return out


_TRACKING: dict = {}  # (tracking URI, home) -> (experiment, client): set up once per process


def _tracking(tracking_uri, home):
    """The MLflow experiment and client for fine-tune runs (set up once per process)."""
    from mlflow import MlflowClient

    from ..tracking import setup_tracking

    ck = (str(tracking_uri), str(resolve_home(home)))
    if ck not in _TRACKING:
        tr = setup_tracking(tracking_uri, home, experiment=EXPERIMENT)
        _TRACKING[ck] = (tr, MlflowClient(tracking_uri=tr.tracking_uri))
    return _TRACKING[ck]


def warm_tracking(tracking_uri=None, home=None) -> str | None:
    """Set up MLflow before the first trial (so that its one-time cost is not in a trial's time).

    Returns an error message instead of raising; the trials then record it.
    """
    from ..tracking import SafeLogger

    sl = SafeLogger()
    with sl.step("set up MLflow"):
        _tracking(tracking_uri, home)
    return sl.message() or None


def _mlflow_params(model: str, spec: str, dataset: str, config: TrialConfig, data: TaskData) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)) for k, v in {**config.hparams(), "model": model, "spec": spec, "dataset": dataset,
                                          "data": data.ref}.items()]


def _log_mlflow(*, tracking_uri, home, res: TrialResult, data: TaskData, extra: dict,
                run_id: str | None = None) -> tuple[str | None, str | None]:
    """Log a finished trial's MLflow run: its params, tags ``job_id`` / ``trial`` / ``status``, the
    curves and best accuracy, FINISHED or FAILED. ``run_id``: the run :func:`_mlflow_start`
    created when the trial started (its ``job_id`` / ``trial`` tags are there); without it the
    run is created now, starting when the trial started."""
    from ..tracking import SafeLogger

    sl = SafeLogger()
    with sl.step("log fine-tune run"):
        from mlflow.entities import Metric, RunTag

        tr, client = _tracking(tracking_uri, home)
        tags = [RunTag("status", res.status)]
        if run_id is None:
            started = int((time.time() - extra.get("elapsed_s", 0.0)) * 1000)  # the run spans the trial
            run = client.create_run(tr.experiment_id, start_time=started, run_name=f"{res.model} on {res.dataset}")
            run_id = run.info.run_id
            tags += [RunTag("job_id", str(res.job_id)), RunTag("trial", extra["trial"])]
        params = _mlflow_params(res.model, res.spec, res.dataset, res.config, data)
        now = int(time.time() * 1000)
        metrics = [Metric("val_accuracy", float(a), now, i + 1) for i, a in enumerate(res.curve)]
        metrics += [Metric("train_loss", float(v), now, i + 1) for i, v in enumerate(extra.get("train_loss", []))]
        if res.value is not None:
            metrics.append(Metric("best_val_accuracy", float(res.value), now, 0))
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        client.set_terminated(run_id, "FINISHED" if res.status == "completed" else "FAILED")
    return run_id, (sl.message() or None)


@dataclass
class _MlflowStart:
    run_id: str | None
    error: str | None
    seconds: float


def _mlflow_start(tracking_uri, home, p: "PendingTrial", data: TaskData, start_ms: int) -> _MlflowStart:
    """Create a trial's MLflow run (RUNNING) when the trial starts, with its ``job_id`` / ``trial``
    tags (on the bookkeeping thread, while the trial trains). Its params come at the end, with
    the metrics, in the same batch: as many SQLite commits in all as creating the run at the
    end (7), 5 of them after training instead of 7."""
    from ..tracking import SafeLogger

    t = time.perf_counter()
    sl = SafeLogger()
    run_id = None
    with sl.step("start fine-tune run"):
        tr, client = _tracking(tracking_uri, home)
        run = client.create_run(tr.experiment_id, start_time=start_ms, run_name=f"{p.ms.name} on {p.dataset}",
                                tags={"job_id": str(p.job_id), "trial": p.key})
        run_id = run.info.run_id
    return _MlflowStart(run_id, sl.message() or None, time.perf_counter() - t)


def _mlflow_abort(tracking_uri, home, run_ids: list, status: str = "FAILED") -> None:
    """End the RUNNING MLflow runs of trials that did not finish (tag ``status`` failed)."""
    from ..tracking import SafeLogger

    sl = SafeLogger()
    for run_id in run_ids:
        with sl.step("end an unfinished fine-tune run"):
            _, client = _tracking(tracking_uri, home)
            client.set_tag(run_id, "status", "failed")
            client.set_terminated(run_id, status)


def _mlflow_orphans(tracking_uri, home, job_ids: list) -> list:
    """The RUNNING MLflow runs of the jobs ``job_ids`` (trials of a process that was killed)."""
    from ..tracking import SafeLogger

    sl = SafeLogger()
    out = []
    with sl.step("find unfinished fine-tune runs"):
        tr, client = _tracking(tracking_uri, home)
        wanted = {str(j) for j in job_ids}
        for run in client.search_runs([tr.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                      max_results=1000):
            if run.data.tags.get("job_id") in wanted:
                out.append(run.info.run_id)
    return out


@dataclass
class PendingTrial:
    """A trial whose job is started in the store (``running``) and whose training is to run."""

    ms: object
    spec: str
    dataset: str
    config: TrialConfig
    key: str
    fingerprint: str
    job_id: int
    extra: dict
    t0: float
    t_store: float
    mlflow_start: object = None  # Future of the _MlflowStart of a run created when the trial started


def _alive(extra: dict) -> bool:
    """:func:`process_alive`, except that this process's trials still being recorded are alive."""
    if extra.get("pid") == os.getpid() and extra.get("host") == socket.gethostname() \
            and extra.get("trial") in _RECORDING:
        return True
    return process_alive(extra)


def fail_stale(store, dataset: str) -> list[int]:
    """Mark ``running`` jobs on ``dataset`` whose process is gone as failed; return their ids."""
    return store.fail_stale_jobs(dataset=dataset, is_alive=_alive,
                          reason="stale: its process ended without finishing the trial (killed or crashed)")


def prepare_trial(store, spec: str, dataset: str, data: TaskData, config: TrialConfig, *, adapter=None,
                  source: str = SOURCE, tags: dict | None = None, check_stale: bool = True,
                  completed: dict | None = None):
    """Driver side, before training: the reused :class:`TrialResult` of a completed identical
    trial, or a :class:`PendingTrial` whose job is now ``running`` in the store.

    ``check_stale`` first fails the jobs left ``running`` by a dead process (pass False when
    this process has started other jobs that are still running). ``completed``: the
    :func:`completed_trials` of ``dataset`` read once for several trials (default: read now)."""
    from features.extract import parse_model_spec

    config.check()
    if adapter is not None and ":" not in str(spec):
        # an in-memory model (e.g. features.extract.TorchAdapter(module, name)): ``spec`` is its name,
        # its identity is the adapter's cache id (a hash of the weights for a torch module)
        from features.extract import ModelSpec

        ms = ModelSpec(str(spec), adapter.kind, adapter.cache_id())
    else:
        ms = parse_model_spec(spec)
    fp = data.fingerprint()
    key = trial_key(f"{ms.prefix}:{ms.target}", dataset, fp, config)
    if check_stale:
        fail_stale(store, dataset)
    old = (completed if completed is not None else completed_trials(store, dataset)).get(key)
    if old is not None:
        ex = old.extra or {}
        return TrialResult(ms.name, spec, dataset, config, "completed", float(old.value), list(ex.get("curve", [])),
                           ex.get("best_epoch"), ex.get("weights"), int(old.job_id), float(old.duration_s or 0),
                           dict(ex.get("timings", {})), reused=True, mlflow_run=ex.get("mlflow_run"))
    t0 = time.perf_counter()
    hp = {**config.hparams(), "data": fp}
    extra = {"trial": key, "spec": spec, "host": socket.gethostname(), "pid": os.getpid(), "data_ref": data.ref,
             **(tags or {})}
    modality = "text" if data.kind == "text" else "image"
    job_id = store.start_job(model=ms.name, dataset=dataset, regime=f"finetune-{config.mode}", hparams=hp,
                             source=source, provenance=f"recommender finetune {spec} on {data.ref}", extra=extra,
                             model_fields={"modality": modality},
                             dataset_fields={"modality": modality, "num_samples": len(data),
                                             "num_classes": data.num_classes})
    return PendingTrial(ms, spec, dataset, config, key, fp, job_id, extra, t0, time.perf_counter() - t0)


_ADAPTER: dict = {}  # the last model loaded by train_trial in this process (a grid reuses it)


def train_trial(spec: str, data: TaskData, config: TrialConfig, *, device="auto", adapter=None, progress=None,
                key: str | None = None, preload=None) -> dict:
    """The training part of a trial, pure (writes nothing): runs in the driver or on a Ray worker.

    ``preload`` (in process only): a callable returning ``(adapter, used_later, seconds)``, the
    model loaded ahead by :class:`_Preloader`; the wait for it is timed as ``load_wait_s``, the
    load itself (on the preloading thread, mostly while the previous trial trained) as ``preload_s``.
    Returns :func:`train_classifier`'s dict (best accuracy, curve, best weights as arrays);
    raises on failure.
    """
    from features.extract import load_adapter

    pid_dir = os.environ.get(PID_DIR_ENV)
    if pid_dir and Path(pid_dir).is_dir():
        (Path(pid_dir) / f"{os.getpid()}-{key}").touch()
    restore, waited, loaded = True, None, 0.0
    if adapter is None and preload is not None:
        t = time.perf_counter()
        adapter, restore, loaded = preload()
        waited = time.perf_counter() - t
    if adapter is None:
        if spec not in _ADAPTER:
            _ADAPTER.clear()
            _ADAPTER[spec] = load_adapter(spec)
        adapter = _ADAPTER[spec]
    out = train_classifier(adapter, data, config, device=device, progress=progress, restore=restore)
    if waited is not None:
        out["timings"].update(load_wait_s=waited, preload_s=loaded)
    return out


class _Preloader:
    """Loads the models of one call's trials a trial ahead, on a thread, while the current
    trial trains (in-process executors). Each spec is loaded once per call (a grid's trials
    share it; :func:`train_classifier` restores its weights between them), on the CPU (so
    that two models never sit on the GPU at once); a model is let go after its last trial."""

    def __init__(self, specs: list, kind: str):
        from concurrent.futures import ThreadPoolExecutor

        self.specs, self.kind = list(specs), kind
        self._loads: dict = {}  # spec -> Future of (its adapter, load seconds)
        self._used: set = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-preload")

    def _load(self, spec):
        from features.extract import load_adapter

        t = time.perf_counter()
        adapter = load_adapter(spec)
        adapter._load(self.kind, _cpu())
        return adapter, time.perf_counter() - t

    def _submit(self, spec):
        if spec not in self._loads:
            self._loads[spec] = self._pool.submit(self._load, spec)

    def adapter(self, i: int):
        """Trial ``i``'s adapter (raises its load error), whether a later trial uses it, and the
        seconds its load took on the thread (0 after its first trial); starts loading the next
        model."""
        spec = self.specs[i]
        self._submit(spec)
        later = self.specs[i + 1:]
        nxt = next((s for s in later if s != spec), None)
        if nxt is not None:
            self._submit(nxt)
        for s in [s for s in self._loads if s != spec and s not in later]:
            del self._loads[s]
        adapter, seconds = self._loads[spec].result()
        first = spec not in self._used
        self._used.add(spec)
        if spec not in later:
            del self._loads[spec]
        return adapter, spec in later, seconds if first else 0.0

    def close(self):
        self._loads.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _cpu():
    import torch

    return torch.device("cpu")


def finish_trial(store, p: PendingTrial, data: TaskData, out: dict | None, error: str | None = None, *, home=None,
                 mlflow: bool = True, tracking_uri=None, background: list | None = None) -> TrialResult:
    """Driver side, after training: save the weights, log MLflow, mark the job completed or failed.

    ``background`` (a list): saving the weights, the MLflow run and the final store write are handed to this
    process's bookkeeping thread (:class:`_Bookkeeper`, in submission order) so that the
    next trial trains meanwhile; the future is appended to the list and
    :func:`wait_background` must be called before the store is read. The job stays
    ``running`` until that write, so a process killed in between leaves a job that the next
    run marks failed and redoes, as for a kill during training.
    """
    res = TrialResult(p.ms.name, p.spec, p.dataset, p.config, "failed", job_id=p.job_id, error=error)
    res.duration_s = time.perf_counter() - p.t0
    if out is not None:  # until the weights are saved (_record), a failure there turns it to failed
        res.timings = dict(out["timings"])
        res.status, res.value, res.curve, res.best_epoch = "completed", float(out["value"]), out["curve"], \
            out["best_epoch"]
    if background is None or not _can_background(store):
        return _record(store, p, res, data, out, home, mlflow, tracking_uri)
    _RECORDING.add(p.key)
    background.append(_BOOKKEEPER.submit(_record, store, p, res, data, out, home, mlflow, tracking_uri))
    return res


#: trial keys of this process whose job is recorded on the bookkeeping thread, not yet finished in the store
#: (a later run_trials call must not take them for leftovers of an interrupted call)
_RECORDING: set = set()


def _record(store, p: PendingTrial, res: TrialResult, data: TaskData, out: dict | None, home, mlflow: bool,
            tracking_uri) -> TrialResult:
    try:
        return _record_trial(store, p, res, data, out, home, mlflow, tracking_uri)
    finally:
        _RECORDING.discard(p.key)


def _record_trial(store, p: PendingTrial, res: TrialResult, data: TaskData, out: dict | None, home, mlflow: bool,
                  tracking_uri) -> TrialResult:
    """Save the weights, log the MLflow run, then write the job's final state, in that order.

    ``duration_s`` (set by :func:`finish_trial`) runs from the job's start until its result
    is ready; the recording is timed in ``timings`` (``save_s``, ``mlflow_s``, ``store_s``)."""
    extra_done = {"error": res.error}
    if out is not None:
        try:
            t = time.perf_counter()
            folder = weights_dir(home, p.dataset, p.ms.name, p.key)
            info = {"model": p.ms.name, "spec": p.spec, "dataset": p.dataset, "data": data.ref,
                    "data_fingerprint": p.fingerprint, "classes": [str(c) for c in data.class_names],
                    "hparams": p.config.hparams(), "job_id": p.job_id, "val_accuracy": out["value"],
                    "curve": out["curve"], "best_epoch": out["best_epoch"], "feature_dim": out["feature_dim"],
                    "layout": "head/<param>: new linear head; backbone/<param>: fine-tuned backbone state dict "
                              "(full mode only)"}
            wpath = save_weights(folder, out["state"], info)
            res.timings["save_s"] = time.perf_counter() - t
            res.status, res.value, res.curve = "completed", float(out["value"]), out["curve"]
            res.best_epoch, res.weights, res.error = out["best_epoch"], str(wpath), None
            extra_done = {"curve": out["curve"], "train_loss": out["train_loss"], "best_epoch": out["best_epoch"],
                          "weights": str(wpath), "n_train": out["n_train"], "n_val": out["n_val"]}
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the job is failed, not left running
            res.status, res.value, res.error = "failed", None, _reason(exc)
            extra_done = {"error": res.error}
    if mlflow:
        start = p.mlflow_start.result() if p.mlflow_start is not None else None
        t = time.perf_counter()
        res.mlflow_run, err = _log_mlflow(tracking_uri=tracking_uri, home=home, res=res, data=data,
                                          extra={**p.extra, **extra_done, "elapsed_s": t - p.t0},
                                          run_id=start.run_id if start is not None else None)
        res.timings["mlflow_s"] = time.perf_counter() - t + (start.seconds if start is not None else 0.0)
        extra_done["mlflow_run"] = res.mlflow_run
        if err:
            extra_done["mlflow_error"] = err
    t = time.perf_counter()
    res.timings["total_s"] = res.duration_s
    extra_done["timings"] = res.timings
    store.finish_job(p.job_id, status=res.status, value=res.value, duration_s=res.duration_s, extra=extra_done)
    res.timings["store_s"] = p.t_store + time.perf_counter() - t
    return res


class _Bookkeeper:
    """One background thread per process for the MLflow runs and final store writes of trials."""

    def __init__(self):
        self._pool = None

    def submit(self, fn, *args):
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-bookkeeping")
        return self._pool.submit(fn, *args)


_BOOKKEEPER = _Bookkeeper()


def _can_background(store) -> bool:
    """An in-memory SQLite store lives in one connection of one thread: record it in line."""
    url = getattr(getattr(store, "engine", None), "url", None)
    return url is not None and not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


def wait_background(futures: list) -> None:
    """Wait for the recordings handed to the bookkeeping thread; re-raise the first error."""
    first = None
    for f in futures:
        try:
            f.result()
        except BaseException as exc:  # noqa: BLE001 - wait for all of them, then raise
            first = first or exc
    futures.clear()
    if first is not None:
        raise first


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"


def run_trial(store, spec: str, dataset: str, data: TaskData, config: TrialConfig, *, home=None, device="auto",
              mlflow: bool = True, tracking_uri=None, source: str = SOURCE, tags: dict | None = None,
              progress=None, adapter=None) -> TrialResult:
    """Run (or reuse) one trial of ``spec`` on ``data`` and record it; never leaves a half-written job.

    ``spec`` is a model spec string (see :mod:`features.extract`), or, with ``adapter`` given
    (any adapter, e.g. ``TorchAdapter(module, name)`` for an in-memory ``nn.Module``), just the
    model's name.

    A completed trial with the same model spec, dataset, data fingerprint and hyper-parameters
    is reused. A running job of this trial whose process is gone is marked failed first.
    Errors in training are recorded as a failed job and returned (``status="failed"``);
    ``KeyboardInterrupt`` is recorded and re-raised.
    """
    from features.extract import load_adapter

    p = prepare_trial(store, spec, dataset, data, config, adapter=adapter, source=source, tags=tags)
    if isinstance(p, TrialResult):
        return p
    out, error = None, None
    try:
        out = train_classifier(adapter or load_adapter(p.ms), data, config, device=device, progress=progress)
    except KeyboardInterrupt:
        store.finish_job(p.job_id, status="failed", duration_s=time.perf_counter() - p.t0,
                         extra={"error": "interrupted (KeyboardInterrupt)"})
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed job with its message
        error = _reason(exc)
        log.debug("trial failed", exc_info=True)
    return finish_trial(store, p, data, out, error, home=home, mlflow=mlflow, tracking_uri=tracking_uri)


def run_trials(store, executor, trials: list, dataset: str, data: TaskData, *, home=None, device="auto",
               mlflow: bool = True, tracking_uri=None, tags: dict | None = None, resources=None,
               progress=None, on_result=None, background: list | None = None) -> list[TrialResult]:
    """Run ``trials`` (a list of ``(spec, TrialConfig)``) with ``executor``: one task per trial.

    The driver (this process) starts every job in the store, the tasks only train, and the
    driver saves the weights and finishes each job as its result comes back, so that a task
    retried after a lost worker still makes one job. The MLflow run and the job's final write
    go to the bookkeeping thread (see :func:`finish_trial`) while the next trial trains; they
    are all written before this returns (or raises), unless ``background`` (a list) is given:
    then the recordings still running are appended to it and the caller calls
    :func:`wait_background` on it before it reads the store or returns (a caller that runs
    one call after the other, like ``search``, so overlaps the last trial's recording with its
    next call's training). ``progress(spec, epoch, acc)`` only works in process (the local
    executor). ``on_result(TrialResult)`` is called as each trial ends. Returns the results
    in the order of ``trials``.
    """
    from ..executor import Resources, Task

    out: list = [None] * len(trials)
    pending, tasks = {}, []
    later = background if background is not None else []
    data = data.snapshot()  # the fingerprint (a stat of every image file) once for the whole call
    stale = fail_stale(store, dataset)
    bg = _can_background(store)
    if mlflow and stale:  # a killed process's trials: their MLflow runs were left RUNNING
        orphans = _mlflow_orphans(tracking_uri, home, stale)
        if orphans:
            _mlflow_abort(tracking_uri, home, orphans)
    completed = completed_trials(store, dataset)
    preloader = None
    try:
        for i, (spec, cfg) in enumerate(trials):
            p = prepare_trial(store, spec, dataset, data, cfg, tags=tags, check_stale=False, completed=completed)
            if isinstance(p, TrialResult):
                out[i] = p
                if on_result:
                    on_result(p)
                continue
            key = f"{i}:{p.key}"
            pending[key] = (i, p)
            kw = {"device": device, "key": p.key}
            if executor.in_process and progress is not None:
                kw["progress"] = (lambda e, a, s=spec: progress(s, e, a))
            tasks.append(Task(key, train_trial, (spec, data, cfg), kw, resources or Resources()))
        if executor.in_process and tasks:  # the next trial's model loads while this one trains
            preloader = _Preloader([t.args[0] for t in tasks], data.kind)
            for n, t in enumerate(tasks):
                t.kwargs["preload"] = functools.partial(_begin, preloader, n, pending[t.key][1], data,
                                                        mlflow and bg, tracking_uri, home)
        for o in executor.map(tasks, progress=not executor.in_process, desc="trials"):
            i, p = pending.pop(o.key)
            # the jobs are all started up front: a trial's duration runs from its task's start (plus its
            # start write), not from when it was queued behind the others
            p.t0 = max(p.t0, time.perf_counter() - float(o.seconds or 0.0) - p.t_store)
            out[i] = finish_trial(store, p, data, o.value if o.ok else None, None if o.ok else o.error, home=home,
                                  mlflow=mlflow, tracking_uri=tracking_uri, background=later)
            if on_result:
                on_result(out[i])
        if background is None:
            wait_background(later)
    except BaseException as exc:  # interrupted, or the executor itself failed (e.g. the cluster went away)
        try:
            wait_background(later)  # the trials already finished are recorded first
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.debug("recording a finished trial failed", exc_info=True)
        why = "interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt) else f"executor: {_reason(exc)}"
        started = []  # the MLflow runs created at their trials' start
        for i, p in pending.values():
            store.finish_job(p.job_id, status="failed", duration_s=time.perf_counter() - p.t0, extra={"error": why})
            if p.mlflow_start is not None:
                try:
                    run_id = p.mlflow_start.result().run_id
                except Exception:  # noqa: BLE001 - _mlflow_start does not raise; nothing to end
                    run_id = None
                if run_id:
                    started.append(run_id)
        if started:
            _mlflow_abort(tracking_uri, home, started, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if preloader is not None:
            preloader.close()
    return out


def _begin(preloader: _Preloader, n: int, p: PendingTrial, data: TaskData, mlflow: bool, tracking_uri, home):
    """At the start of task ``n`` (in process): its MLflow run is created on the bookkeeping
    thread (the run spans the trial; only its end is left for after training), and its model
    comes from the preloader."""
    if mlflow:
        p.mlflow_start = _BOOKKEEPER.submit(_mlflow_start, tracking_uri, home, p, data, int(time.time() * 1000))
    return preloader.adapter(n)


def finetune_model(store, spec: str, dataset: str, data: TaskData, grid: list[TrialConfig], **kw) -> list[TrialResult]:
    """Run every config of ``grid`` for one model (one adapter load); see :func:`run_trial`."""
    from features.extract import load_adapter, parse_model_spec

    adapter = None
    out = []
    for cfg in grid:
        if adapter is None:
            try:
                adapter = load_adapter(parse_model_spec(spec))
            except Exception:  # noqa: BLE001 - reported by run_trial as a failed job
                adapter = None
        out.append(run_trial(store, spec, dataset, data, cfg, adapter=adapter, **kw))
    return out


def best_of(results: list[TrialResult]) -> TrialResult | None:
    done = [r for r in results if r.status == "completed" and r.value is not None]
    return max(done, key=lambda r: r.value) if done else None
