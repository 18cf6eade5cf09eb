"""Fine-tune training: the model plumbing, the training loop (:func:`train_classifier`) and
saving the weights (:func:`save_weights` under :func:`weights_dir`)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from features.extract import Adapter, TorchAdapter, find_feature_layer, resolve_device
from history.config import resolve_home

from .config import FineTuneError, TrialConfig
from .data import TaskData

#: test hook: when this file exists, every training epoch sleeps this long (kill -9 tests)
SLOW_ENV = "RECOMMENDER_TEST_EPOCH_SLEEP"


# ============================================================================ model plumbing
def _backbone(adapter):
    for attr in ("module", "model"):
        m = getattr(adapter, attr, None)
        if m is not None:
            return m
    raise FineTuneError(f"model {adapter.name!r} ({adapter.kind}) has no trainable module")


def _prepare(adapter, kind: str, device):
    """Load the adapter for ``kind`` on ``device``; return the backbone module."""
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
