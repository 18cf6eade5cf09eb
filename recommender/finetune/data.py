"""Fine-tune data: :class:`TaskData`, read by :func:`load_task`, split by :func:`split_indices`."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from features.data import DataError, load_text_csv, scan_image_folder

from .config import FineTuneError


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

    def snapshot(self) -> TaskData:
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
    d = load_text_csv(p, text_column=text_column, label_column=label_column)
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
