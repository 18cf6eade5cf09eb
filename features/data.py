"""Loaders for the target data that model-selection scores are computed on.

Every loader returns a :class:`LoadedData` that unpacks as ``inputs, labels, class_names``
(``labels`` are integer codes into ``class_names``).

* **Image folder** -- one sub-folder per class (``root/<class>/<image>``), like
  torchvision's ``ImageFolder``. :func:`scan_image_folder` lists files and labels without
  decoding any image (so the probe is drawn first); :func:`load_images` decodes, converts to
  RGB (or grayscale), resizes to the model's input size and normalizes
  (``(x / 255 - mean) / std``), returning a float32 tensor ``[n, C, H, W]``.
* **Text CSV** -- a CSV with a text column and a label column (default ``text``, ``label``).
* **Precomputed npz** -- features already extracted elsewhere. Layout::

      labels              [n]      int or str   class of every sample (required)
      class_names         [k]      str          optional; names of the integer labels
      features/<model>    [n, d]   float        penultimate features of <model> (>= 1)
      probs/<model>       [n, c]   float        optional; source-class probabilities
                                                (rows sum to 1) of <model>

  ``<model>`` is the model name stored in the history (it may contain ``/``, e.g.
  ``features/google/vit-base-patch16-224``). Write one with :func:`save_features_npz`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from history.errors import RecommenderError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(RecommenderError):
    """Target data cannot be read (missing folder/file, bad column, bad array, ...)."""


@dataclass
class LoadedData:
    """Target data: ``inputs`` (paths, texts, tensor or None), integer ``labels``, ``class_names``.

    ``kind`` is ``images`` | ``text`` | ``features``; ``features``/``probs`` map model names to
    arrays for precomputed data; ``notes`` list anything that was skipped and why.
    """

    inputs: Any  # paths, texts, a tensor or None
    labels: np.ndarray
    class_names: list
    kind: str
    ref: str
    features: dict = field(default_factory=dict)
    probs: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __iter__(self):  # ``inputs, labels, class_names = load_...(...)``
        return iter((self.inputs, self.labels, self.class_names))

    def __len__(self):
        return int(len(self.labels))

    @property
    def num_classes(self) -> int:
        return int(len(np.unique(self.labels)))


def _encode(raw) -> tuple[np.ndarray, list]:
    names, codes = np.unique(np.asarray(raw), return_inverse=True)
    return codes.astype(np.int64), [n.item() if hasattr(n, "item") else n for n in names]


# ---------------------------------------------------------------------------- images
def scan_image_folder(root) -> LoadedData:
    """List ``root/<class>/<file>`` images (sorted); ``inputs`` is the list of file paths."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; expected root/<class>/<image> "
                        "with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; expected root/<class>/<image>")
    paths, labels, notes = [], [], []
    skipped = 0
    for i, c in enumerate(classes):
        files = sorted(f for f in (root / c).rglob("*") if f.is_file() and not f.name.startswith("."))
        good = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += len(files) - len(good)
        if not good:
            notes.append(f"class folder {root / c} has no images ({', '.join(IMAGE_EXTENSIONS)}); class left out")
        paths += [str(f) for f in good]
        labels += [i] * len(good)
    if skipped:
        notes.append(f"{skipped} non-image file(s) ignored (extensions other than {', '.join(IMAGE_EXTENSIONS)})")
    if not paths:
        raise DataError(f"image folder {root} contains no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    codes, names = _encode(np.asarray([classes[i] for i in labels]))
    return LoadedData(paths, codes, names, "images", str(root), notes=notes)


def load_images(paths, *, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels: int = 3):
    """Decode ``paths`` into a normalized float32 tensor ``[n, channels, H, W]``.

    ``size`` is an int (square) or ``(H, W)``; images are resized with bilinear filtering
    (no crop). ``mean``/``std`` have ``channels`` entries (a single value is broadcast).
    """
    import torch
    from PIL import Image, UnidentifiedImageError

    h, w = (size, size) if np.isscalar(size) else tuple(int(s) for s in size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    mean = np.resize(np.asarray(mean, np.float32), channels).reshape(channels, 1, 1)
    std = np.resize(np.asarray(std, np.float32), channels).reshape(channels, 1, 1)
    out = np.empty((len(paths), channels, h, w), np.float32)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB" if channels == 3 else "L").resize((w, h), Image.BILINEAR)
                a = np.asarray(im, np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {p}: {exc}. Remove or replace the file.") from None
        a = a.reshape(h, w, -1).transpose(2, 0, 1)
        out[i] = (a - mean) / std
    return torch.from_numpy(out)


def load_image_folder(root, *, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels: int = 3,
                      indices=None) -> LoadedData:
    """Scan ``root`` and decode the images (only those at ``indices`` if given) to a tensor."""
    d = scan_image_folder(root)
    idx = np.arange(len(d)) if indices is None else np.asarray(indices, dtype=np.int64)
    d.inputs = load_images([d.inputs[i] for i in idx], size=size, mean=mean, std=std, channels=channels)
    d.labels = d.labels[idx]
    return d


# ---------------------------------------------------------------------------- text
def load_text_csv(path, *, text_column: str = "text", label_column: str = "label") -> LoadedData:
    """Read a CSV of texts and labels. Rows with an empty text or label are dropped (counted in notes)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse {path} as CSV: {exc}") from None
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {missing}; columns are {list(df.columns)}. "
                        "Choose them with --text-column / --label-column.")
    text = df[text_column].str.strip()
    lab = df[label_column].str.strip()
    bad = (text == "") | (lab == "")
    notes = []
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2)[:10]  # +2: header line, 1-based
        notes.append(f"{int(bad.sum())} row(s) of {path} dropped for an empty {text_column!r} or "
                     f"{label_column!r} (file lines {', '.join(map(str, rows))}{' ...' if bad.sum() > 10 else ''})")
    df = df[~bad]
    if df.empty:
        raise DataError(f"{path} has no rows with both {text_column!r} and {label_column!r}")
    codes, names = _encode(lab[~bad].to_numpy())
    return LoadedData(df[text_column].tolist(), codes, names, "text", str(path), notes=notes)


# ---------------------------------------------------------------------------- npz
def load_features_npz(path) -> LoadedData:
    """Read precomputed ``labels``, ``features/<model>`` and ``probs/<model>`` arrays (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features file {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as a numpy .npz file (pickled arrays are refused): {exc}") from None
    if "labels" not in arrays:
        raise DataError(f"{path} has no 'labels' array; keys are {sorted(arrays)}. Layout: labels [n], "
                        "features/<model> [n, d], optional probs/<model> [n, c], optional class_names [k]")
    raw = arrays["labels"]
    if raw.ndim != 1:
        raise DataError(f"{path}: 'labels' must be 1-D, got shape {raw.shape}")
    n = len(raw)
    feats, probs = {}, {}
    for k, a in arrays.items():
        group, _, model = k.partition("/")
        if group not in ("features", "probs"):
            continue
        if not model:
            raise DataError(f"{path}: key {k!r} must name a model, e.g. '{group}/resnet50'")
        if a.ndim != 2 or a.shape[0] != n:
            raise DataError(f"{path}: {k!r} has shape {a.shape}, expected [{n}, dim] (one row per label)")
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: {k!r} has dtype {a.dtype}, expected numbers")
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
            raise DataError(f"{path}: {k!r} has NaN/inf values in rows {bad[:10].tolist()}")
        (feats if group == "features" else probs)[model] = a.astype(np.float64 if group == "probs" else np.float32)
    if not feats:
        raise DataError(f"{path} has no 'features/<model>' arrays; keys are {sorted(arrays)}")
    orphans = sorted(set(probs) - set(feats))
    if orphans:
        raise DataError(f"{path}: probs without features for model(s) {orphans}; add features/<model>")
    if "class_names" in arrays and np.issubdtype(raw.dtype, np.integer):
        names = [str(x) for x in arrays["class_names"]]
        if raw.min() < 0 or raw.max() >= len(names):
            raise DataError(f"{path}: labels range {raw.min()}..{raw.max()} does not index class_names "
                            f"({len(names)} names)")
        codes = raw.astype(np.int64)
    else:
        codes, names = _encode(raw)
    return LoadedData(None, codes, names, "features", str(path), features=feats, probs=probs)


def save_features_npz(path, labels, features: dict, probs: dict | None = None, class_names=None) -> Path:
    """Write the npz layout read by :func:`load_features_npz`."""
    arrays = {"labels": np.asarray(labels)}
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names])
    for m, a in features.items():
        arrays[f"features/{m}"] = np.asarray(a, np.float32)
    for m, a in (probs or {}).items():
        arrays[f"probs/{m}"] = np.asarray(a, np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_data(path, *, text_column: str = "text", label_column: str = "label") -> LoadedData:
    """Dispatch on the path: a folder -> images, ``.csv``/``.tsv`` -> text, ``.npz`` -> features.

    Image pixels are not decoded here (``inputs`` are file paths); see :func:`load_images`.
    """
    p = Path(path)
    if p.is_dir():
        return scan_image_folder(p)
    if not p.exists():
        raise DataError(f"data path {p} does not exist (expected an image folder, a .csv of texts or a .npz)")
    suf = p.suffix.lower()
    if suf == ".npz":
        return load_features_npz(p)
    if suf in (".csv", ".tsv"):
        return load_text_csv(p, text_column=text_column, label_column=label_column)
    raise DataError(f"cannot tell the kind of data in {p}: use an image folder (root/<class>/<image>), "
                    "a .csv with text and label columns, or a .npz of precomputed features")
