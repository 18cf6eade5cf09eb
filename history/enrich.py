"""Model meta-features offline: params, GMACs, input size, depth, feature dim, family,
pretraining dataset and pretraining domain for the models of every source.

:func:`enrich` fills only the fields a model lacks (idempotent: a second run changes nothing)
and reports, per source, what it filled and what stayed unknown and why. No network, no weights.

Where each fact comes from, in this order:

1. **timm's published tables** (``benchmark-infer-*.csv`` of the timm import, found through the
   store's import log or passed as ``timm_dir``): params and GMACs of an architecture at an input
   size. Used for timm models and for any other model whose architecture has a timm name at the
   same input size (``google/vit-base-patch16-224`` = ``vit_base_patch16_224``).
2. **Published tables** in this module: the five PARC architectures (torchvision model docs:
   params, "GFLOPS" which torchvision reports as multiply-adds; input size = their standard
   ImageNet resolution 224; feature dim of the penultimate layer) and VAN (Guo et al. 2022,
   Visual Attention Network, Table 1: params and FLOPs as multiply-adds).
3. **transformers configs built without weights**: the family comes from the stored
   ``family`` (TransferGraph's ``model_type``) or from the Hugging Face name; the size variant
   from the name (``tiny``/``small``/``base``/``large``/``huge``, ``mit-bN``, ``L-6``), or, when
   the store knows the parameter count, the variant whose count is within 10% of it; patch,
   window and image size from the name (``patch16``, ``window7``, ``-384``) or the stored input
   size. The model is built on the meta device and counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (GMACs = FLOPs / 2, attention included, batch 1;
   text models at 128 tokens). Params are those of the backbone (no classification head).
   Depth = number of blocks of the config; feature dim = width of the pooled output.
4. **Pretraining dataset** from the stored value (TransferGraph's ``dataset``, PARC's source),
   timm's model tag (``augreg_in21k_ft_in1k`` -> ImageNet-21k: the data before ``_ft_``), or a
   pretraining hint in the name (``in21k``, ``pt22k``, ``bertweet``); else the pretraining
   corpus of the family's reference checkpoints (:data:`~history.model_names.FAMILY_PRETRAIN`), marked as such in
   ``extra.enrich_pretrain_dataset``. The pretraining *domain* comes from
   :data:`~history.model_names.PRETRAIN_TABLE` (or the dataset
   registry's domain for a target dataset used as a source).

5. **The model facts table** ``history/data/model_facts.json``: public facts about checkpoints
   whose names carry no architecture, each with the page that states it -- the base checkpoint a
   model fine-tunes (HuggingPics checkpoints fine-tune ``google/vit-base-patch16-224-in21k``) or
   the config's family and parameter count (TransferGraph's table of text checkpoints), or the
   family and the weight file's size. A text checkpoint's size variant is the one whose implied
   vocabulary (from the parameter count) lies between 1k and 300k tokens; a weight file sizes a
   checkpoint when exactly one variant fits it (:func:`history.model_names._spec_by_weights`). The spec is then
   counted like any other config.

The timm importer stores timm's ``pretrain`` tag (``in1k``, ``in21k-selfsl``) in ``domain``;
enrich moves such a tag to ``pretrain_dataset`` (when missing) and replaces ``domain`` with the
table's domain -- the one overwrite enrich does, counted as ``repaired`` in the report.

What stays unknown is said per source: mostly community checkpoints whose name carries no
architecture and which no public page in the facts table describes; their ``config.json`` on the
Hub would tell, which needs a network.

The tables and the name parsing (steps 2-5) live in :mod:`history.model_names`; this module
reads timm's tables, decides per model, writes and reports. Command line: ``history enrich``.
"""
from __future__ import annotations

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from history.util import is_missing

from .datasets_registry import load_registry
from .importers.timm import family_of
from .model_names import (
    FAMILY_PRETRAIN, IMAGE_FAMILIES, PARC_ARCH, PARC_REF, PRETRAIN_TABLE, TEXT_MAX_TOKENS, VAN, VAN_REF, Spec, count,
    load_model_facts, parse_hf_name, pretrain_domain, pretrain_key, spec_from_fact, timm_name, timm_tag_pretrain)

FIELDS = ("params", "gmacs", "input_size", "depth", "feature_dim", "family", "pretrain_dataset", "domain")
COVERAGE_FIELDS = ("params", "gmacs", "input_size", "family", "domain")
BENCHMARK_GLOB = "benchmark-infer-*.csv"


# --------------------------------------------------------------------------- timm tables
def load_timm_benchmark(folder) -> dict:
    """{(arch, img_size): (params, gmacs)} from a timm ``benchmark-infer-*.csv`` in ``folder``."""
    if folder is None:
        return {}
    p = Path(folder)
    files = sorted(p.glob(BENCHMARK_GLOB)) if p.is_dir() else ([p] if p.exists() else [])
    if not files:
        return {}
    b = pd.read_csv(files[0])
    out = {}
    for r in b.itertuples(index=False):
        try:
            params = float(str(r.param_count).replace(",", "")) * 1e6
            out[(str(r.model).strip(), int(r.infer_img_size))] = (params, float(r.infer_gmacs))
        except (TypeError, ValueError):
            continue
    return out


_BY_ARCH: dict = {}


def _bench_by_arch(bench: dict) -> dict:
    key = id(bench)
    if key not in _BY_ARCH:
        idx: dict = {}
        for k, v in bench.items():
            idx.setdefault(k[0], []).append((k, v))
        _BY_ARCH.clear()
        _BY_ARCH[key] = idx
    return _BY_ARCH[key]


def _name_img(name: str) -> int:
    m = re.search(r"(?<![0-9])(224|256|288|384|448|512)(?![0-9])", str(name))
    return int(m.group(1)) if m else 224


def _timm_dir_from_store(store):
    try:
        imp = store.imports_frame()
    except Exception:  # pragma: no cover - an old store without the log
        return None
    if imp.empty:
        return None
    rows = imp[imp["importer"] == "timm"]
    for path in reversed(rows["path"].dropna().tolist()):
        p = Path(path)
        folder = p if p.is_dir() else p.parent
        if folder.is_dir() and any(folder.glob(BENCHMARK_GLOB)):
            return folder
    return None


# --------------------------------------------------------------------------- the report
@dataclass
class SourceReport:
    source: str
    models: int = 0
    filled: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    unknown: dict = field(default_factory=lambda: defaultdict(Counter))  # field -> reason -> n
    have: Counter = field(default_factory=Counter)  # field -> models that have it after enrich

    def coverage(self) -> dict:
        return {f: (self.have[f] / self.models if self.models else 0.0) for f in FIELDS}


@dataclass
class EnrichReport:
    sources: dict = field(default_factory=dict)  # source -> SourceReport
    models_updated: int = 0
    timm_table: str | None = None
    seconds: float = 0.0
    configs_counted: int = 0  # distinct architectures built and counted with FlopCounterMode

    def coverage_table(self) -> pd.DataFrame:
        rows = []
        for s, r in sorted(self.sources.items()):
            cov = r.coverage()
            rows.append({"source": s, "models": r.models, **{f: round(100 * cov[f], 1) for f in FIELDS}})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [f"enrich: {self.models_updated} models updated in {self.seconds:.1f} s, "
                 f"{self.configs_counted} architectures counted"
                 + (f" (timm table: {self.timm_table})" if self.timm_table else " (no timm table found)")]
        for s, r in sorted(self.sources.items()):
            cov = r.coverage()
            lines.append(f"  {s}: {r.models} models; coverage " + ", ".join(
                f"{f} {100 * cov[f]:.0f}%" for f in FIELDS))
            if r.filled:
                lines.append("    filled: " + ", ".join(f"{f} {n}" for f, n in sorted(r.filled.items())))
            if r.repaired:
                lines.append("    repaired: " + ", ".join(f"{w} {n}" for w, n in sorted(r.repaired.items())))
            for f in FIELDS:
                for why, n in r.unknown.get(f, Counter()).most_common(3):
                    lines.append(f"    unknown {f}: {n} x {why}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- enrich
def _missing(v) -> bool:
    return is_missing(v) or (isinstance(v, str) and not v.strip())


class _Facts:
    """What enrich learns of one model: facts, where each came from, and why others stay unknown."""

    def __init__(self):
        self.facts, self.prov, self.why = {}, {}, {}

    def put(self, k, v, how):
        if v is not None and k not in self.facts:
            self.facts[k], self.prov[k] = v, how


def _facts_for(m: dict, sources: set, bench: dict) -> tuple[dict, dict, dict]:
    """(facts, provenance, reasons-unknown) for one model row; facts may include stored ones."""
    f = _Facts()
    m = {k: (None if _missing(v) else v) for k, v in m.items()}
    name, arch = str(m["name"]), m.get("architecture")
    if "timm" in sources and isinstance(arch, str):
        _timm_model_facts(f, m, name, arch, bench)
    elif isinstance(arch, str) and arch in PARC_ARCH and "@" in name:
        for k, v in PARC_ARCH[arch].items():
            f.put(k, v, PARC_REF)
    else:
        fact = load_model_facts().get(name)
        spec, reason = _checkpoint_spec(f, m, name, fact)
        if spec is None and fact is not None:
            pass  # what the fact gives is filled above; the rest stays unknown with the reason
        elif spec is None:
            _family_only_facts(f, m, name, reason)
        else:
            _spec_facts(f, m, name, fact, spec, bench)
        _timm_named_facts(f, name, bench)
        _pretrain_facts(f, m, name, fact)
    _domain_facts(f, m)
    return f.facts, f.prov, f.why


def _timm_model_facts(f: _Facts, m: dict, name: str, arch: str, bench: dict) -> None:
    """A timm model: params and GMACs from timm's table, pretraining data from its tag."""
    size = m.get("input_size")
    hit = bench.get((arch, int(size))) if size and not pd.isna(size) else None
    if hit:
        f.put("params", hit[0], "timm table")
        f.put("gmacs", hit[1], "timm table")
    for k in ("depth", "feature_dim"):
        f.why[k] = "timm's tables give no depth / feature dim (the timm package is not a dependency)"
    if not hit:
        f.why["gmacs"] = "architecture not in timm's benchmark table at its input size"
    key = timm_tag_pretrain(name) or pretrain_key(m.get("domain"))
    f.put("pretrain_dataset", key, "timm model tag")
    if key is None:
        f.why["pretrain_dataset"] = "timm tag names no pretraining data"


def _checkpoint_spec(f: _Facts, m: dict, name: str, fact: dict | None) -> tuple[Spec | None, str]:
    """The architecture spec of a checkpoint: from its public fact (whose params and family are
    filled here) or from its name."""
    modality = m.get("modality")
    if fact is None:
        return parse_hf_name(name, modality, m.get("family"), m.get("input_size"), m.get("params"))
    # a public fact about this checkpoint (history/data/model_facts.json)
    spec, reason = spec_from_fact(fact, modality, m.get("input_size"))
    ref = f"model facts table ({fact['url']})"
    if fact.get("params"):
        f.put("params", float(fact["params"]), ref)
    if fact.get("family"):
        f.put("family", str(fact["family"]).lower(), ref)
        if modality == "text" and str(fact["family"]).lower() in TEXT_MAX_TOKENS:
            f.put("input_size", TEXT_MAX_TOKENS[str(fact["family"]).lower()],
                  "max sequence length of the family")
    if spec is None:
        for k in ("params", "gmacs", "depth", "feature_dim", "family"):
            if k not in f.facts:
                f.why[k] = reason
    return spec, reason


def _family_only_facts(f: _Facts, m: dict, name: str, reason: str) -> None:
    """No spec from the name: the family when the reason names one; the rest unknown, with why."""
    modality = m.get("modality")
    fam_only = reason.split(":", 1)[0] if ":" in reason else None
    if fam_only:  # the family is known, its size is not
        f.put("family", fam_only, "name")
        if modality == "image":
            f.put("input_size", m.get("input_size") or _name_img(name), "name / default 224")
    for k in ("params", "gmacs", "depth", "feature_dim") + (() if fam_only else ("family",)):
        f.why[k] = reason
    if modality == "image" and _missing(m.get("input_size")) and "input_size" not in f.facts:
        f.why["input_size"] = reason


def _spec_facts(f: _Facts, m: dict, name: str, fact: dict | None, spec: Spec, bench: dict) -> None:
    """A known spec: family and input size, then params / GMACs / depth / feature dim from the
    published tables, timm's table or a transformers config counted without weights."""
    put, why, modality = f.put, f.why, m.get("modality")
    by = "name" if fact is None else f"model facts table ({fact['url']})"
    put("family", spec.family if spec.family != "minilm" else "bert", by)
    if spec.family in IMAGE_FAMILIES:
        put("input_size", spec.image_size, f"{by} / default 224")
    if spec.family == "van" and spec.variant is not None:  # a VAN spec always names its variant
        for k, v in VAN[spec.variant].items():
            put(k, v, VAN_REF)
    t = timm_name(spec, name) if spec.variant or spec.family == "resnet" else None
    hit = bench.get((t, spec.image_size or 224)) if t else None
    if hit:
        put("params", hit[0], f"timm table ({t})")
        put("gmacs", hit[1], f"timm table ({t})")
    if spec.family == "resnet" and t and t[6:].isdigit():  # resnet-N: N weighted layers
        put("depth", int(t[6:]), "name (resnet-N)")
        put("feature_dim", 512 if int(t[6:]) < 50 else 2048, "ResNet design (He et al. 2016)")
    if spec.family not in ("van", "perceiver", "resnet"):
        try:
            c = count(spec)
            how = f"transformers config ({spec.family} {spec.variant}, variant by {spec.how})"
            for k in ("params", "gmacs", "depth", "feature_dim"):
                put(k, c[k], how)
        except ImportError as exc:
            for k in ("params", "gmacs", "depth", "feature_dim"):
                why.setdefault(k, str(exc))
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            for k in ("params", "gmacs", "depth", "feature_dim"):
                why.setdefault(k, f"{spec.family}: config not built ({type(exc).__name__}: {exc})"[:120])
    elif spec.family in ("perceiver", "resnet") and not hit:
        for k in ("params", "gmacs", "depth", "feature_dim"):
            why.setdefault(k, f"{spec.family}: architecture not modelled here")
    if modality == "text":
        put("input_size", 128 if spec.family == "bertweet" else 512, "max sequence length of the family")


def _timm_named_facts(f: _Facts, name: str, bench: dict) -> None:
    """timm-named checkpoints on the Hub (timm/vit_huge_patch14_224_in21k, .../convit_base)."""
    tail = name.split("/")[-1]
    toks = tail.split("_")
    by_arch = _bench_by_arch(bench)
    for i in range(len(toks), 0, -1):
        cand = "_".join(toks[:i])
        hits = by_arch.get(cand)
        if hits:
            (a, sz), (p, g) = min(hits, key=lambda kv: kv[0][1])
            f.put("params", p, f"timm table ({a})")
            f.put("gmacs", g, f"timm table ({a})")
            f.put("input_size", sz, f"timm table ({a})")

            f.put("family", family_of(a), "timm architecture name")
            for k in ("params", "gmacs", "input_size", "family"):
                f.why.pop(k, None)
            break


def _pretrain_facts(f: _Facts, m: dict, name: str, fact: dict | None) -> None:
    """Pretraining data: the fact's, a hint in the name, or the family's reference data."""
    put, modality = f.put, m.get("modality")
    stored = pretrain_key(m.get("pretrain_dataset"))
    if stored is None and fact is not None and fact.get("pretrain_dataset"):
        put("pretrain_dataset", pretrain_key(fact["pretrain_dataset"]) or fact["pretrain_dataset"],
            f"model facts table ({fact['url']})")
    hint = None
    hint_name = name + (" " + fact["base"] if fact is not None and fact.get("base") else "")
    for pat in (r"in21k|in22k|pt22k|22k", r"bertweet|twitter|tweet", r"biobert|pubmed", r"patent"):
        mm = re.search(pat, hint_name.lower())
        if mm:
            hint = {"in": "imagenet-21k", "pt": "imagenet-21k", "22": "imagenet-21k", "be": "tweets",
                    "tw": "tweets", "bi": "pubmed", "pu": "pubmed", "pa": "patents"}[mm.group(0)[:2]]
            break
    fam = f.facts.get("family") or m.get("family")
    if stored is None:
        if hint:
            put("pretrain_dataset", hint, "name hint")
        elif fam in FAMILY_PRETRAIN and not (modality == "text" and fam in IMAGE_FAMILIES):
            # (an image family's reference data says nothing of a text checkpoint: Perceiver IO)
            put("pretrain_dataset", FAMILY_PRETRAIN[fam], f"family default ({fam})")
        else:
            f.why["pretrain_dataset"] = "no source, name hint or known family"


def _domain_facts(f: _Facts, m: dict) -> None:
    """The pretraining domain, from the pretraining table."""
    pk = pretrain_key(m.get("pretrain_dataset")) or f.facts.get("pretrain_dataset")
    dom = pretrain_domain(pk)
    if dom is not None:
        f.put("domain", dom, f"pretraining table ({pk})")
    elif pk is not None:
        f.why["domain"] = f"pretraining data {m.get('pretrain_dataset') or pk!r} is not in the pretraining table"
    else:
        f.why.setdefault("domain", "pretraining data unknown")


def enrich(store, *, timm_dir=None, progress: bool = False) -> EnrichReport:
    """Fill the missing model meta-features of every model in ``store`` (see the module doc).

    Only missing fields are written (the one exception: a timm pretrain tag stored as ``domain``
    is replaced by its domain); a second call changes nothing. Returns an :class:`EnrichReport`."""
    t0 = time.perf_counter()
    n_counted = count.cache_info().currsize
    folder = timm_dir if timm_dir is not None else _timm_dir_from_store(store)
    bench = load_timm_benchmark(folder)
    rep = EnrichReport(timm_table=None if not bench else str(folder))
    models = store.models_frame()
    jobs = store.jobs_frame()
    src_of = jobs.groupby("model")["source"].agg(lambda x: set(x)).to_dict() if len(jobs) else {}
    updates, repairs = [], []
    rows = models.to_dict("records")
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="enrich models", unit="model")
    for m in it:
        sources = src_of.get(m["name"]) or {"(no jobs)"}
        for s in sources:
            rep.sources.setdefault(s, SourceReport(s)).models += 1
        if all(not _missing(m.get(f)) for f in FIELDS):  # complete: nothing to compute or say
            for s in sources:
                for f in FIELDS:
                    rep.sources[s].have[f] += 1
            continue
        facts, prov, why = _facts_for(m, sources, bench)
        upd, new = {}, dict(m)
        # a timm pretrain tag stored as domain: keep it as pretrain_dataset, set the real domain
        dom_now = m.get("domain")
        if ("timm" in sources and not _missing(dom_now) and str(dom_now) not in _domains()
                and pretrain_key(dom_now) is not None and "domain" in facts):
            repairs.append({"name": m["name"], "domain": facts["domain"]})
            new["domain"] = facts["domain"]
            for s in sources:
                rep.sources[s].repaired["domain (a pretrain tag replaced by its domain)"] += 1
        for f in FIELDS:
            if _missing(m.get(f)) and f in facts and facts[f] is not None:
                upd[f] = facts[f]
                new[f] = facts[f]
                for s in sources:
                    rep.sources[s].filled[f] += 1
        for s in sources:
            r = rep.sources[s]
            for f in FIELDS:
                if not _missing(new.get(f)):
                    r.have[f] += 1
                else:
                    r.unknown[f][why.get(f, "no source for it")] += 1
        if upd:
            # where each filled value came from (one extra key per field: an existing key is kept)
            upd["extra"] = {f"enrich_{f}": prov[f] for f in list(upd) if f in prov}
            updates.append({"name": m["name"], **upd})
    if updates or repairs:  # one transaction: fill-only updates, then the stated domain repairs
        with store.write() as conn:
            if updates:
                store.commit(models=updates, overwrite_meta=False, conn=conn)
            if repairs:
                store.commit(models=repairs, overwrite_meta=True, conn=conn)
    rep.models_updated = len({u["name"] for u in updates} | {r["name"] for r in repairs})
    rep.configs_counted = count.cache_info().currsize - n_counted
    rep.seconds = time.perf_counter() - t0
    return rep


@lru_cache(maxsize=1)
def _domains() -> frozenset:
    return frozenset({d for _, d in PRETRAIN_TABLE.values()} | set(load_registry().domains))
