"""Store the datasets of a public history under their registry (canonical) names.

An importer of a public history (TransferGraph, SHiFT, PARC, timm) names a dataset the way its
source does (``pets``, ``svhn``, ``smallnorb_label_azimuth``). Before the batch is written,
:func:`canonicalize` renames every dataset the registry knows to its canonical name (in the
dataset records, jobs, scores and probes), so that twins from several sources share one dataset
row; the jobs keep their ``source``. After the write, :func:`apply_to_store` (same transaction)
merges into that row's ``extra``:

* ``aliases``: ``{source: [name, ...]}``, the names each source used;
* ``source_facts``: ``{source: {num_samples, num_classes, domain}}``, what each source's file states;
* ``registry``: the registry's facts (description, class names, task, VTAB group, ...).

The columns hold the registry's canonical facts (conflict rule 1 of
:mod:`history.datasets_registry`). A fact a source states differently is reported in the import
summary with its resolution (a ``note:`` line), never settled silently. A name the registry does
not know keeps its name; if it was already stored with other facts, the stored value stays and
the difference is reported too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update

from .. import schema as S
from ..datasets_registry import DatasetRegistry, load_registry

_FACTS = ("num_samples", "num_classes", "domain")


@dataclass
class DatasetPlan:
    """What :func:`canonicalize` did to a batch, and what :func:`apply_to_store` merges."""

    renamed: dict = field(default_factory=dict)  # source name -> canonical name
    aliases: dict = field(default_factory=dict)  # canonical -> {source: [names]}
    stated: dict = field(default_factory=dict)  # stored name -> {source: {fact: value}}
    canonical_facts: dict = field(default_factory=dict)  # canonical -> {column: value}
    unknown: list = field(default_factory=list)  # names the registry does not know
    conflicts: list = field(default_factory=list)  # one line each, resolution included


def _fmt(v):
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else repr(v)


def canonicalize(batch, registry: DatasetRegistry | None = None) -> DatasetPlan:
    """Rename the batch's datasets to their canonical names, in place; return the plan."""
    reg = registry or load_registry()
    rep = batch.report
    default_src = rep.source
    # which source uses which name: from the jobs and scores (PARC's one file feeds two sources)
    sources: dict[str, list] = {}
    for r in list(batch.jobs) + list(batch.scores):
        s = str(r.get("source") or default_src)
        lst = sources.setdefault(str(r["dataset"]), [])
        if s not in lst:
            lst.append(s)
    names = [str(d["name"]) for d in batch.datasets] + list(sources) + [str(p["dataset"]) for p in batch.probes]
    plan = DatasetPlan()
    entries = {}
    for n in dict.fromkeys(names):
        srcs = sources.get(n) or [default_src]
        ent = reg.lookup(n, srcs[0])
        if ent is None:
            plan.unknown.append(n)
            continue
        entries[n] = ent
        plan.renamed[n] = ent.name
        for s in srcs:
            lst = plan.aliases.setdefault(ent.name, {}).setdefault(s, [])
            if n not in lst:
                lst.append(n)

    # dataset records: canonical facts in the columns, the file's own facts kept per source
    out: dict[str, dict] = {}
    for d in batch.datasets:
        n = str(d["name"])
        srcs = sources.get(n) or [default_src]
        stated = {k: d[k] for k in _FACTS if d.get(k) is not None}
        ent = entries.get(n)
        if ent is None:
            rec = out.setdefault(n, {"name": n})
            for k, v in d.items():
                if v is not None and rec.get(k) is None:
                    rec[k] = v
            if stated:
                for s in srcs:
                    plan.stated.setdefault(n, {})[s] = stated
            continue
        canon = ent.name
        if canon not in out:
            base = ent.store_record()
            base["extra"].pop("facts_for_source", None)
            out[canon] = base
            plan.canonical_facts[canon] = {k: base[k] for k in ("modality", *_FACTS) if base.get(k) is not None}
        rec = out[canon]
        for k, v in (d.get("extra") or {}).items():  # the source's own details (base_dataset, label_name, ...)
            rec["extra"].setdefault(k, v)
        if stated:
            for s in srcs:
                plan.stated.setdefault(canon, {})[s] = stated
        plan.conflicts += _conflicts(ent, srcs, n, stated)
    for n, canon in plan.renamed.items():  # names used by jobs / scores only
        if canon not in out:
            base = entries[n].store_record()
            base["extra"].pop("facts_for_source", None)
            out[canon] = base
            plan.canonical_facts[canon] = {k: base[k] for k in ("modality", *_FACTS) if base.get(k) is not None}
    for canon, al in plan.aliases.items():
        out[canon]["extra"]["aliases"] = {s: list(v) for s, v in al.items()}
        if canon in plan.stated:
            out[canon]["extra"]["source_facts"] = {s: dict(v) for s, v in plan.stated[canon].items()}
    batch.datasets = list(out.values())
    for rows in (batch.jobs, batch.scores, batch.probes):
        for r in rows:
            c = plan.renamed.get(str(r["dataset"]))
            if c is not None:
                r["dataset"] = c

    moved = {n: c for n, c in plan.renamed.items() if n != c}
    if moved:
        rep.notes.append("datasets stored under their registry names: "
                         + ", ".join(f"{n} -> {c}" for n, c in sorted(moved.items()))
                         + " (the source's names are kept as aliases; history list-datasets --aliases)")
    if plan.unknown:
        rep.notes.append(f"{len(plan.unknown)} dataset name(s) not in the dataset registry, stored as named: "
                         + ", ".join(sorted(plan.unknown)[:10]) + (" ..." if len(plan.unknown) > 10 else ""))
    return plan


def _conflicts(ent, sources: list, name: str, stated: dict) -> list[str]:
    """Lines for the facts ``sources`` state differently from the registry, with the rule applied."""
    out = []
    sf = ent.source_facts(sources[0])
    source = ", ".join(sources)
    for k in ("num_samples", "num_classes"):
        v, c = stated.get(k), getattr(ent, k)
        if v is None or c is None or v == c:
            continue
        known = sf is not None and getattr(sf, k) == v
        if known and sf.erratum:
            how = f"an erratum of the source ({sf.erratum}): canonical {_fmt(c)} used everywhere"
        elif known:
            how = (f"canonical {_fmt(c)} stored for the dataset; the source's {_fmt(v)} is kept in "
                   f"extra.source_facts for its jobs (registry: {sf.note or 'listed per source'})")
        else:
            how = (f"not listed in the registry: canonical {_fmt(c)} stored ({ent.num_samples_split or 'canonical'} "
                   f"split); the source's {_fmt(v)} is kept in extra.source_facts")
        out.append(f"dataset fact conflict: {ent.name} {k}: {source} ({name}) states {_fmt(v)}, "
                   f"registry {_fmt(c)} -- {how}")
    dom = stated.get("domain")
    if dom is not None and dom not in (ent.domain, ent.vtab_group):
        out.append(f"dataset fact conflict: {ent.name} domain: {source} ({name}) states {dom!r}, registry "
                   f"{ent.domain!r} -- the registry's domain vocabulary is stored; the source's value is kept in "
                   "extra.source_facts")
    return out


def _merge_list_dict(old: dict | None, new: dict) -> dict:
    out = {k: list(v) if isinstance(v, list) else [v] for k, v in (old or {}).items()}
    for k, vs in new.items():
        lst = out.setdefault(k, [])
        lst += [v for v in vs if v not in lst]
    return out


def apply_to_store(conn, plan: DatasetPlan, report) -> None:
    """Merge aliases and per-source facts into the stored rows; put canonical facts in the columns.

    Runs in the import's transaction, after ``store.commit``. Reports (as notes) every stored
    value it replaced and every unknown dataset whose stored facts differ from this file's."""
    d = S.datasets
    names = sorted(set(plan.aliases) | set(plan.stated))
    if not names:
        return
    rows = {r["name"]: dict(r) for r in conn.execute(select(d).where(d.c.name.in_(names))).mappings()}
    for name in names:
        row = rows.get(name)
        if row is None:
            continue
        extra = dict(row.get("extra") or {})
        changes = {}
        if name in plan.aliases:
            al = _merge_list_dict(extra.get("aliases"), plan.aliases[name])
            if al != extra.get("aliases"):
                extra["aliases"] = al
        if name in plan.stated:
            sf = {k: dict(v) for k, v in (extra.get("source_facts") or {}).items()}
            for s, facts in plan.stated[name].items():
                sf[s] = {**sf.get(s, {}), **facts}
            if sf != extra.get("source_facts"):
                extra["source_facts"] = sf
        if extra != (row.get("extra") or {}):
            changes["extra"] = S._clean(extra)
        canon = plan.canonical_facts.get(name)
        if canon is not None:
            for k, v in canon.items():
                if row.get(k) is not None and row[k] != v:
                    report.notes.append(f"dataset {name}: stored {k} {_fmt(row[k])} replaced by the registry's "
                                        f"canonical {_fmt(v)}")
                if row.get(k) != v:
                    changes[k] = v
        else:  # not in the registry: the stored value stays (it came first); say so when they differ
            for s, facts in plan.stated.get(name, {}).items():
                for k, v in facts.items():
                    if row.get(k) is not None and row[k] != v:
                        report.notes.append(
                            f"dataset fact conflict: {name} {k}: {s} states {_fmt(v)}, the store holds "
                            f"{_fmt(row[k])} -- {name} is not in the dataset registry, so the stored value stays "
                            "(the file's value is kept in extra.source_facts); change it with "
                            f"'history add-dataset {name} --update ...'")
        if changes:
            conn.execute(update(d).where(d.c.id == row["id"]).values(**changes))
    report.notes.extend(plan.conflicts)


def adopt_source_named_rows(conn, plan: DatasetPlan, report) -> None:
    """Upgrade a store written before the registry: move the rows an earlier import stored under a
    source's name (``pets``) into the canonical row, re-keying their jobs and scores, so that
    importing the same file again adds nothing. Runs in the import's transaction, before the write.

    Only a row whose jobs and scores all come from the sources that use that name is moved; a row
    with other sources' data (a user's own ``pets``) stays as it is (evaluation still holds it out
    with its twins, see ``recommender.protocols.twins_in``)."""
    from sqlalchemy import delete

    d, j, sc, pr = S.datasets, S.jobs, S.scores, S.probes
    for alias, canon in sorted(plan.renamed.items()):
        if alias == canon:
            continue
        old = conn.execute(select(d).where(d.c.name == alias)).mappings().first()
        if old is None:
            continue
        srcs = set(plan.aliases.get(canon, {}))
        used = set(conn.execute(select(j.c.source).where(j.c.dataset_id == old["id"]).distinct()).scalars())
        used |= set(conn.execute(select(sc.c.source).where(sc.c.dataset_id == old["id"]).distinct()).scalars())
        if not used <= srcs:
            report.notes.append(f"dataset {alias!r} in the store also holds data of {', '.join(sorted(used - srcs))}: "
                                f"left as it is (not merged into {canon!r}); evaluation holds both out together")
            continue
        new = conn.execute(select(d).where(d.c.name == canon)).mappings().first()
        if new is None:
            conn.execute(update(d).where(d.c.id == old["id"]).values(name=canon))
            tid = old["id"]
        else:
            tid = new["id"]
            fill = {k: old[k] for k in S.DATASET_FIELDS if new[k] is None and old[k] is not None}
            if old["extra"]:
                fill["extra"] = S._clean({**dict(old["extra"]), **dict(new["extra"] or {})})
            if fill:
                conn.execute(update(d).where(d.c.id == tid).values(**fill))
            have = {(r.size, r.seed) for r in conn.execute(select(pr.c.size, pr.c.seed).where(pr.c.dataset_id == tid))}
            for r in conn.execute(select(pr.c.id, pr.c.size, pr.c.seed).where(pr.c.dataset_id == old["id"])).all():
                if (r.size, r.seed) in have:
                    conn.execute(delete(pr).where(pr.c.id == r.id))
            for t in (j, sc, pr):
                conn.execute(update(t).where(t.c.dataset_id == old["id"]).values(dataset_id=tid))
            conn.execute(delete(d).where(d.c.id == old["id"]))
        n_jobs, n_scores, n_dup = _rekey(conn, tid, canon)
        report.notes.append(f"store upgraded: dataset {alias!r} (stored under the source's name by an earlier "
                            f"version) is now {canon!r}: {n_jobs} job(s) and {n_scores} score(s) re-keyed"
                            + (f", {n_dup} exact duplicate(s) of rows already under {canon!r} removed"
                               if n_dup else ""))


def _rekey(conn, dataset_id: int, name: str) -> tuple[int, int, int]:
    """Recompute the keys of a dataset's jobs and scores after a rename; drop exact duplicates."""
    from sqlalchemy import bindparam, delete

    j, sc, m = S.jobs, S.scores, S.models
    out, n_dup = [], 0
    for table, q, keyf in (
        (j, select(j.c.id, j.c.key, m.c.name.label("model"), j.c.regime, j.c.hparams, j.c.metric, j.c.value,
                   j.c.status, j.c.source, j.c.provenance).join(m, m.c.id == j.c.model_id)
         .where(j.c.dataset_id == dataset_id),
         lambda r: S.job_key(model=r["model"], dataset=name, regime=r["regime"], hparams=r["hparams"],
                             metric=r["metric"], value=r["value"], status=r["status"], source=r["source"],
                             provenance=r["provenance"])),
        (sc, select(sc.c.id, sc.c.key, m.c.name.label("model"), sc.c.method, sc.c.probe_size, sc.c.seed,
                    sc.c.source).join(m, m.c.id == sc.c.model_id).where(sc.c.dataset_id == dataset_id),
         lambda r: S.score_key(model=r["model"], dataset=name, method=r["method"], probe_size=r["probe_size"],
                               seed=r["seed"], source=r["source"])),
    ):
        rows = list(conn.execute(q).mappings())
        keep = {r["key"] for r in rows}
        changes, dups = [], []
        for r in rows:
            k = keyf(r)
            if k == r["key"]:
                continue
            if k in keep:
                dups.append(r["id"])
            else:
                keep.add(k)
                changes.append({"_id": r["id"], "_key": k})
        if dups:
            conn.execute(delete(table).where(table.c.id.in_(dups)))
            n_dup += len(dups)
        if changes:
            conn.execute(update(table).where(table.c.id == bindparam("_id")).values(key=bindparam("_key")), changes)
        out.append(len(changes))
    return out[0], out[1], n_dup
