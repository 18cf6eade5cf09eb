"""Probe sets: the small, seeded, class-stratified subsample that model-selection scores use.

Scores such as LogME, PARC or LEEP are computed on a *probe set* of the target dataset
rather than on all of it (PARC, Bolya et al. NeurIPS 2021, uses 500 images). A probe is

* **seeded** -- the same ``(labels, n, seed)`` always gives the same indices;
* **stratified** -- every kept class gets at least ``min_per_class`` samples (scores that
  estimate per-class statistics, e.g. H-score or GBC, need >= 2), the remainder is split in
  proportion to the class frequencies (largest-remainder rounding);
* **class-subsampled when needed** -- if ``n < min_per_class * num_classes`` (or more than
  ``max_classes`` classes exist), a seeded random subset of classes is kept, as PARC does,
  and :attr:`ProbeSet.notes` says so.

Classes with fewer than ``min_per_class`` samples cannot be represented and are left out,
also with a note (never silently).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from history.errors import RecommenderError


class ProbeError(RecommenderError):
    """A probe set cannot be drawn from the given labels."""


@dataclass(frozen=True)
class ProbeSet:
    """A probe set: ``indices`` into the dataset (sorted), drawn with ``seed``.

    ``n`` is the requested size, ``len(indices)`` the actual one (smaller when the dataset
    is); ``classes`` are the label values kept; ``num_classes_total`` the number of classes
    in the full labels; ``notes`` human-readable remarks (class subsampling, dropped classes).
    """

    indices: np.ndarray
    classes: np.ndarray
    seed: int
    n: int
    num_classes_total: int = 0
    notes: tuple = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return int(len(self.indices))

    @property
    def num_classes(self) -> int:
        return int(len(self.classes))

    @property
    def hash(self) -> str:
        """Content hash of the indices (16 hex chars): part of the feature-cache key."""
        h = hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "n": self.n, "size": self.size, "seed": self.seed, "num_classes": self.num_classes,
            "num_classes_total": self.num_classes_total, "hash": self.hash, "notes": list(self.notes),
        }


def _allocate(counts: np.ndarray, n: int, floor: int) -> np.ndarray:
    """Per-class sample counts summing to ``n``: ``floor`` each, rest proportional, capped by ``counts``."""
    alloc = np.minimum(counts, floor).astype(np.int64)
    rest = n - int(alloc.sum())
    while rest > 0:
        room = counts - alloc
        if room.sum() == 0:
            break
        share = rest * room / room.sum()
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if add.sum() == 0:  # largest remainders get one more each
            order = np.lexsort((np.arange(len(counts)), -(share - np.floor(share))))
            order = [i for i in order if room[i] > 0][:rest]
            add = np.zeros_like(alloc)
            add[order] = 1
        alloc += add
        rest -= int(add.sum())
    return alloc


def sample_probe(labels, n: int = 500, *, seed: int = 0, min_per_class: int = 2,
                 max_classes: int | None = None) -> ProbeSet:
    """Draw a seeded, class-stratified probe of ``n`` samples from ``labels``.

    Parameters
    ----------
    labels : array-like [N] of class labels (ints or strings).
    n : requested probe size (the whole dataset if ``n >= N``).
    seed : random seed (``numpy.random.default_rng``).
    min_per_class : minimum samples of every kept class (>= 1).
    max_classes : keep at most this many classes (seeded random subset).
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ProbeError(f"labels must be one-dimensional, got shape {y.shape}")
    if len(y) == 0:
        raise ProbeError("cannot draw a probe from an empty dataset (0 labels)")
    if int(n) < 1:
        raise ProbeError(f"probe size must be >= 1, got {n}")
    if int(min_per_class) < 1:
        raise ProbeError(f"min_per_class must be >= 1, got {min_per_class}")
    if max_classes is not None and int(max_classes) < 1:
        raise ProbeError(f"max_classes must be >= 1, got {max_classes}")
    n, min_per_class = int(n), int(min_per_class)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    notes: list[str] = []

    ok = counts >= min_per_class
    if not ok.all():
        bad = classes[~ok]
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        notes.append(f"{len(bad)} class(es) with fewer than {min_per_class} samples left out of the probe "
                     f"({int(counts[~ok].sum())} samples): {shown}")
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        raise ProbeError(f"no class has at least {min_per_class} samples ({len(classes)} classes, "
                         f"{len(y)} samples); lower min_per_class")

    limit = n // min_per_class
    if max_classes is not None:
        limit = min(limit, int(max_classes))
    if limit < 1:
        raise ProbeError(f"probe size {n} is smaller than min_per_class={min_per_class}; "
                         f"use a probe of at least {min_per_class}")
    if len(keep) > limit:
        why = (f"max_classes={max_classes}" if max_classes is not None and limit == int(max_classes)
               else f"a probe of {n} with >= {min_per_class} per class")
        notes.append(f"class subsampling: kept {limit} of {len(keep)} classes (seeded) to fit {why}")
        keep = np.sort(rng.choice(keep, size=limit, replace=False))

    total = int(counts[keep].sum())
    target = min(n, total)
    if n > total:
        notes.append(f"requested {n} samples but the kept classes have only {total}: using all of them")
    alloc = _allocate(counts[keep], target, min_per_class)
    picked = []
    for c, k in zip(keep, alloc):
        members = np.flatnonzero(inverse == c)
        picked.append(members if k >= len(members) else rng.choice(members, size=int(k), replace=False))
    idx = np.sort(np.concatenate(picked)).astype(np.int64)
    return ProbeSet(indices=idx, classes=classes[keep], seed=int(seed), n=n,
                    num_classes_total=int(len(classes)), notes=tuple(notes))


def record_probe(store, dataset: str, probe: ProbeSet, *, data_ref: str | None = None) -> int:
    """Store ``probe`` in the history store's ``probes`` table (replacing one of equal size/seed)."""
    return store.add_probe(dataset, size=probe.size, seed=probe.seed, indices=probe.indices.tolist(),
                           num_classes=probe.num_classes, data_ref=data_ref)
