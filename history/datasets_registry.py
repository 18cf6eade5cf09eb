"""The dataset registry: one canonical entry per dataset task across all history sources.

The facts live in a versioned data file shipped with the package,
``history/data/datasets.json``; every fact names its public source (``refs``). An entry holds
the canonical name, the names each source uses (``aliases``), the task definition (label and
preprocessing), the number of training samples with the split it counts, the number of classes,
modality, domain, VTAB group, class names where public, and a one-line description.

Names. A name (canonical or alias, compared case-insensitively) belongs to exactly one entry;
the schema check refuses a data file where an alias maps to two entries. Two names are *twins*
when they resolve to the same entry (``pets`` / ``oxford_iiit_pet`` / ``oxford_pets``):
a leave-one-dataset-out holdout must hold out all of them. Tasks that share images but not
labels (``smallnorb_azimuth`` / ``smallnorb_elevation``) are separate entries with the same
``base_dataset``; :meth:`DatasetRegistry.twins` lists them only with ``same_images=True``.

Conflict rule. The same dataset may be stated differently by two sources (caltech101: 3,060
training images and 102 classes in TFDS / VTAB, 2,630 and 101 in PARC). The rule is:

1. The *canonical* facts describe the dataset as published by its authors or TFDS, for the
   split named in ``num_samples_split``. They are the facts of the dataset as a whole (what a
   store's dataset row should hold).
2. A source's own value (``per_source``) describes what that source actually trained on and is
   used for that source's jobs: ``entry.facts(source)``.
3. Except an *erratum*: a source value known to be wrong (TransferGraph lists Oxford
   Flowers-102 with 10 classes) is never used; the canonical value replaces it.
4. :meth:`DatasetRegistry.conflicts` reports every fact on which a source differs from the
   canonical value, with the resolution applied, so that nothing is settled silently
   (no first-import-wins).

Training-set size per regime (:meth:`DatasetEntry.train_size`): ``full`` = the split's size,
``vtab-1k`` = 1,000 (800 train + 200 validation), ``slice-<p>%`` = p% of the split.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("data") / "datasets.json"
SCHEMA_VERSION = 1
#: Sources whose names the registry knows; ``other`` holds common spellings (TFDS, papers).
KNOWN_SOURCES = ("transfergraph-image", "shift", "parc", "parc-controlled", "timm", "vtab", "two-phase-selection",
                 "openclip", "other")
MODALITIES = ("image", "text")
VTAB_1K_SIZE = 1000  # 800 train + 200 validation examples
_FACT_FIELDS = ("num_samples", "num_classes")


class RegistryError(ValueError):
    """The registry data file is malformed (message names the entry and the field)."""


@dataclass(frozen=True)
class SourceFacts:
    """What one source states about a dataset when it differs from the canonical facts."""

    source: str
    num_samples: int | None = None
    num_classes: int | None = None
    ref: str | None = None
    note: str | None = None
    erratum: str | None = None  # set when the source's value is known to be wrong: never used


@dataclass(frozen=True)
class Conflict:
    """One fact on which a source differs from the canonical value, and how it is resolved."""

    dataset: str
    source: str
    field: str
    canonical: object
    source_value: object
    resolution: str
    note: str | None = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    modality: str
    domain: str
    vtab_group: str | None
    label: str
    preprocess: str | None
    base_dataset: str
    num_samples: int | None
    num_samples_split: str | None
    num_classes: int | None
    class_names: tuple = ()
    aliases: tuple = ()  # ((source, (name, ...)), ...)
    refs: tuple = ()  # ((fact, ref key), ...)
    per_source: tuple = ()  # (SourceFacts, ...)
    notes: str | None = None
    image_size: int | None = None  # typical longer side of the images, pixels (approximate)

    def aliases_for(self, source: str) -> tuple:
        return dict(self.aliases).get(source, ())

    def all_names(self) -> tuple:
        """The canonical name and every alias, in a stable order without repeats."""
        seen = [self.name]
        for _, names in self.aliases:
            seen += [n for n in names if n not in seen]
        return tuple(seen)

    def source_facts(self, source: str | None) -> SourceFacts | None:
        for sf in self.per_source:
            if sf.source == source:
                return sf
        return None

    def facts(self, source: str | None = None) -> dict:
        """``num_samples`` / ``num_classes`` for ``source`` with the conflict rule applied, and
        ``from`` naming where each value came from (``canonical`` or the source)."""
        out: dict[str, Any] = {"num_samples": self.num_samples, "num_classes": self.num_classes,
                               "from": {"num_samples": "canonical", "num_classes": "canonical"}}
        sf = self.source_facts(source)
        if sf is not None and not sf.erratum:
            for f in _FACT_FIELDS:
                v = getattr(sf, f)
                if v is not None:
                    out[f] = v
                    out["from"][f] = source
        return out

    def train_size(self, source: str | None = None, regime: str | None = None) -> int | None:
        """Training examples of this task under ``regime`` (see the module docstring)."""
        n = self.facts(source)["num_samples"]
        if regime in (None, "full"):
            return n
        if regime == "vtab-1k":
            return VTAB_1K_SIZE
        m = re.fullmatch(r"slice-(\d+(?:\.\d+)?)%", str(regime))
        if m and n is not None:
            return int(round(n * float(m.group(1)) / 100))
        return None

    def store_record(self, source: str | None = None) -> dict:
        """A dataset record for ``HistoryStore.commit(datasets=[...])`` under the canonical name:
        the canonical facts (rule 1) in the columns, everything else in ``extra``."""
        return {
            "name": self.name, "modality": self.modality, "num_samples": self.num_samples,
            "num_classes": self.num_classes, "domain": self.domain,
            "extra": {
                "registry": {
                    "description": self.description, "vtab_group": self.vtab_group, "label": self.label,
                    "preprocess": self.preprocess, "base_dataset": self.base_dataset,
                    "num_samples_split": self.num_samples_split, "class_names": list(self.class_names),
                    "aliases": {s: list(n) for s, n in self.aliases},
                    "source_facts": {sf.source: {k: v for k, v in sf.__dict__.items() if v is not None}
                                     for sf in self.per_source},
                },
                **({"facts_for_source": {source: self.facts(source)}} if source else {}),
            },
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "modality": self.modality,
            "domain": self.domain, "vtab_group": self.vtab_group, "label": self.label,
            "preprocess": self.preprocess, "base_dataset": self.base_dataset,
            "num_samples": self.num_samples, "num_samples_split": self.num_samples_split,
            "num_classes": self.num_classes, "class_names": list(self.class_names),
            "aliases": {s: list(n) for s, n in self.aliases}, "refs": dict(self.refs),
            "per_source": {sf.source: {k: v for k, v in sf.__dict__.items() if k != "source" and v is not None}
                           for sf in self.per_source},
            "notes": self.notes, "image_size": self.image_size,
        }


def _key(name: str) -> str:
    return str(name).strip().lower()


def validate(data: Mapping) -> list[str]:
    """Every problem of a registry data file, one line each (empty list = valid)."""
    errs: list[str] = []
    if not isinstance(data, Mapping):
        return ["the registry file must hold a JSON object"]
    if data.get("schema_version") != SCHEMA_VERSION:
        errs.append(f"schema_version is {data.get('schema_version')!r}; this code reads {SCHEMA_VERSION}")
    for k in ("registry_version", "refs", "domains", "vtab_groups", "datasets"):
        if k not in data:
            errs.append(f"missing top-level key {k!r}")
    if errs:
        return errs
    refs, domains, groups = data["refs"], data["domains"], data["vtab_groups"]
    owner: dict[str, str] = {}
    names = set()
    for i, e in enumerate(data["datasets"]):
        where = f"datasets[{i}] ({e.get('name', '?')})"
        for k, typ in (("name", str), ("description", str), ("modality", str), ("domain", str),
                       ("task", dict), ("base_dataset", str), ("aliases", dict), ("refs", dict),
                       ("class_names", list)):
            if not isinstance(e.get(k), typ):
                errs.append(f"{where}: {k} must be a {typ.__name__}")
        if errs and errs[-1].startswith(where):
            continue
        name = e["name"]
        if name in names:
            errs.append(f"{where}: canonical name repeated")
        names.add(name)
        if not e["description"].strip() or "\n" in e["description"]:
            errs.append(f"{where}: description must be one non-empty line")
        if e["modality"] not in MODALITIES:
            errs.append(f"{where}: modality {e['modality']!r} is not one of {MODALITIES}")
        if e["domain"] not in domains:
            errs.append(f"{where}: domain {e['domain']!r} is not in the file's domains table")
        g = e.get("vtab_group")
        if g is not None and g not in groups:
            errs.append(f"{where}: vtab_group {g!r} is not one of {sorted(groups)}")
        if g is not None and e["modality"] != "image":
            errs.append(f"{where}: only image tasks have a VTAB group")
        if not isinstance(e["task"].get("label"), str) or not e["task"]["label"]:
            errs.append(f"{where}: task.label must name what is predicted")
        for f in _FACT_FIELDS:
            v = e.get(f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                                  or v < (2 if f == "num_classes" else 1)):
                errs.append(f"{where}: {f} must be a positive integer (>= 2 classes) or null, got {v!r}")
        v = e.get("image_size")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 8):
            errs.append(f"{where}: image_size must be an integer number of pixels (>= 8) or null, got {v!r}")
        if v is not None and "image_size" not in e["refs"]:
            errs.append(f"{where}: image_size has no ref naming its source")
        if v is not None and e["modality"] != "image":
            errs.append(f"{where}: only image tasks have an image_size")
        if e.get("num_samples") is not None and not e.get("num_samples_split"):
            errs.append(f"{where}: num_samples needs num_samples_split naming the split it counts")
        cn = e["class_names"]
        if cn:
            if not all(isinstance(c, str) and c for c in cn):
                errs.append(f"{where}: class_names must be non-empty strings")
            elif len(set(cn)) != len(cn):
                errs.append(f"{where}: class_names repeat a name")
            if e.get("num_classes") is not None and len(cn) != e["num_classes"]:
                errs.append(f"{where}: {len(cn)} class_names but num_classes = {e['num_classes']}")
            if "class_names" not in e["refs"]:
                errs.append(f"{where}: class_names need a ref naming their source")
        for fact, ref in e["refs"].items():
            if ref not in refs:
                errs.append(f"{where}: refs.{fact} = {ref!r} is not in the file's refs table")
        for f in _FACT_FIELDS:
            if e.get(f) is not None and f not in e["refs"]:
                errs.append(f"{where}: {f} has no ref naming its source")
        for src, al in e["aliases"].items():
            if src not in KNOWN_SOURCES:
                errs.append(f"{where}: aliases for unknown source {src!r} (known: {', '.join(KNOWN_SOURCES)})")
            if not isinstance(al, list) or not all(isinstance(a, str) and a.strip() for a in al):
                errs.append(f"{where}: aliases.{src} must be a list of names")
                continue
        for n in [name] + [a for al in e["aliases"].values() if isinstance(al, list) for a in al]:
            k = _key(n)
            if owner.get(k, name) != name:
                errs.append(f"{where}: name {n!r} also belongs to {owner[k]!r} (an alias maps to one dataset)")
            owner.setdefault(k, name)
        for src, sf in (e.get("per_source") or {}).items():
            if src not in KNOWN_SOURCES:
                errs.append(f"{where}: per_source for unknown source {src!r}")
            if not isinstance(sf, dict):
                errs.append(f"{where}: per_source.{src} must be an object")
                continue
            bad = set(sf) - {"num_samples", "num_classes", "ref", "note", "erratum"}
            if bad:
                errs.append(f"{where}: per_source.{src} has unknown fields {sorted(bad)}")
            if sf.get("ref") not in refs:
                errs.append(f"{where}: per_source.{src} needs a ref from the refs table")
            for f in _FACT_FIELDS:
                v = sf.get(f)
                if v is not None and (not isinstance(v, int) or v < 1):
                    errs.append(f"{where}: per_source.{src}.{f} must be a positive integer")
    return errs


def _entry(e: Mapping) -> DatasetEntry:
    return DatasetEntry(
        name=e["name"], description=e["description"], modality=e["modality"], domain=e["domain"],
        vtab_group=e.get("vtab_group"), label=e["task"]["label"], preprocess=e["task"].get("preprocess"),
        base_dataset=e["base_dataset"], num_samples=e.get("num_samples"),
        num_samples_split=e.get("num_samples_split"), num_classes=e.get("num_classes"),
        class_names=tuple(e["class_names"]),
        aliases=tuple((s, tuple(n)) for s, n in e["aliases"].items()),
        refs=tuple(sorted(e["refs"].items())),
        per_source=tuple(SourceFacts(source=s, **sf) for s, sf in (e.get("per_source") or {}).items()),
        notes=e.get("notes"), image_size=e.get("image_size"),
    )


@dataclass
class DatasetRegistry:
    """The registry loaded from a data file (validated on construction)."""

    data: dict
    path: str | None = None
    entries: dict = field(init=False)
    _index: dict = field(init=False, repr=False)

    def __post_init__(self):
        errs = validate(self.data)
        if errs:
            where = self.path or "registry data"
            more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
            raise RegistryError(f"{where}: {errs[0]}{more}")
        self.entries = {e["name"]: _entry(e) for e in self.data["datasets"]}
        self._index = {}
        for ent in self.entries.values():
            for n in ent.all_names():
                self._index[_key(n)] = ent.name

    @property
    def version(self) -> str:
        return str(self.data["registry_version"])

    @property
    def refs(self) -> dict:
        return dict(self.data["refs"])

    @property
    def domains(self) -> dict:
        return dict(self.data["domains"])

    def __iter__(self) -> Iterator[DatasetEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, name: str, source: str | None = None) -> DatasetEntry | None:
        """The entry ``name`` denotes (canonical name or any alias, case-insensitive), or None.

        With ``source``, that source's own aliases are tried first; since a name belongs to one
        entry only, the answer is the same either way for names the registry knows."""
        if name is None:
            return None
        if source is not None:
            for ent in self.entries.values():
                if _key(name) in {_key(a) for a in ent.aliases_for(source)}:
                    return ent
        canon = self._index.get(_key(name))
        return None if canon is None else self.entries[canon]

    def canonical_name(self, name: str, source: str | None = None) -> str | None:
        ent = self.lookup(name, source)
        return None if ent is None else ent.name

    def twins(self, name: str, source: str | None = None, *, same_images: bool = False) -> list[str]:
        """All names of the same task across sources (canonical first), for holdouts.

        ``same_images=True`` adds every task on the same images (same ``base_dataset``), e.g.
        both smallnorb tasks. An unknown name is its own only twin."""
        ent = self.lookup(name, source)
        if ent is None:
            return [name]
        group = [ent]
        if same_images:
            group += [e for e in self.entries.values() if e.base_dataset == ent.base_dataset and e is not ent]
        out: list[str] = []
        for e in group:
            out += [n for n in e.all_names() if n not in out]
        return out

    def conflicts(self) -> list[Conflict]:
        """Every fact a source states differently from the canonical value, rule applied."""
        out = []
        for ent in self.entries.values():
            for sf in ent.per_source:
                for f in _FACT_FIELDS:
                    v, c = getattr(sf, f), getattr(ent, f)
                    if v is None or v == c:
                        continue
                    if sf.erratum:
                        res = f"erratum: the source's {f} is wrong ({sf.erratum}); canonical {c} used everywhere"
                    else:
                        res = f"canonical {c} for the dataset; {sf.source}'s own {v} for {sf.source}'s jobs"
                    out.append(Conflict(ent.name, sf.source, f, c, v, res, sf.note or sf.erratum))
        return out

    def groups(self, names, source: str | None = None) -> dict[str, list[str]]:
        """Group the given dataset names by task: {canonical name: [given names]}, in input order.

        An unknown name is a group of its own, under its own name. A leave-one-dataset-out split
        over a pooled store holds out one group at a time, so no twin stays in training."""
        out: dict[str, list[str]] = {}
        for n in names:
            key = self.canonical_name(n, source) or n
            if key != n and n in self.entries:  # a canonical name is never an alias of another
                key = n
            out.setdefault(key, [])
            if n not in out[key]:
                out[key].append(n)
        return out

    def aliases_table(self) -> list[dict]:
        """One row per (name, source) -> canonical name: the mapping ``list-datasets --aliases`` shows."""
        rows = []
        for ent in self.entries.values():
            for src, names in ent.aliases:
                for n in names:
                    rows.append({"name": n, "source": src, "canonical": ent.name})
        return sorted(rows, key=lambda r: (r["canonical"], r["source"], r["name"]))


def load_registry(path: str | Path | None = None) -> DatasetRegistry:
    """Load and validate a registry file (default: the one shipped in the package, cached)."""
    if path is None:
        return _default()
    return _load(Path(path))


def _load(p: Path) -> DatasetRegistry:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{p}: dataset registry file not found") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{p}: not valid JSON ({exc})") from None
    return DatasetRegistry(data, str(p))


@lru_cache(maxsize=1)
def _default() -> DatasetRegistry:
    return _load(DATA_FILE)


def lookup(name: str, source: str | None = None) -> DatasetEntry | None:
    return _default().lookup(name, source)


def canonical_name(name: str, source: str | None = None) -> str | None:
    return _default().canonical_name(name, source)


def twins(name: str, source: str | None = None, *, same_images: bool = False) -> list[str]:
    return _default().twins(name, source, same_images=same_images)


def resolve_name(name: str, names) -> str | None:
    """The name among ``names`` (e.g. a store's datasets) that denotes the same task as ``name``:
    ``name`` itself when present, else its registry twin that is present (canonical first), else
    None. Lets a user type ``pets`` for a store that holds ``oxford_iiit_pet``."""
    have = set(names)
    if name in have:
        return name
    for n in twins(name):
        if n in have:
            return n
    return None


def conflicts() -> list[Conflict]:
    return _default().conflicts()


def groups(names, source: str | None = None) -> dict[str, list[str]]:
    return _default().groups(names, source)
