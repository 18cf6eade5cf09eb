"""The featurizer: (model, dataset) pairs -> one explicit, named feature matrix.

Feature groups (select with ``groups="d,m,s"``, as in the ablations of Li et al.,
"Guided Recommendation for Model Fine-Tuning", CVPR 2023):

``d`` -- dataset
    ``d:id=<name>`` one-hot of the training datasets (an unseen dataset is all zeros);
    ``d:log_num_samples``, ``d:log_num_classes``, ``d:log_samples_per_class``;
    ``d:modality=<v>``, ``d:domain=<v>`` one-hots; ``d:score_mean:<method>``, the mean
    MS score of the dataset over all models (task difficulty measured *without* fine-tuning).
    Nothing in ``d`` is derived from fine-tuning results.
``m`` -- model
    ``m:id=<name>`` one-hot of the training models; ``m:family=``, ``m:pretrain=``,
    ``m:domain=``, ``m:modality=`` one-hots; ``m:input_size``, ``m:log_params``,
    ``m:log_gmacs``, ``m:depth``, ``m:feature_dim``, ``m:source_accuracy``;
    ``m:pretrain_matches_dataset`` (the model was pre-trained / already fine-tuned on a
    dataset of the same name) and the *collaborative statistics*, computed from the
    TRAINING targets only:

    * ``m:collab_mean`` -- mean over the model's training datasets ``t != d`` of the
      per-dataset z-score ``z(m, t) = (acc(m, t) - mean_t) / std_t``;
    * ``m:collab_kernel`` -- the same mean weighted by dataset similarity
      ``w(d, t) = exp(-||u_d - u_t||^2 / h^2)`` with ``u`` the standardized
      (log #samples, log #classes) of a dataset and ``h = collab_bandwidth``;
    * ``m:collab_acc`` -- mean raw accuracy over the training datasets ``t != d``;
    * ``m:collab_log_n`` -- ``log(1 + #training datasets t != d)``.

    The target of the row's own pair is always left out (``t != d``), so a training row
    never sees its own label and a held-out dataset never contributes.
``s`` -- model-selection scores
    per method ``s:z:<method>``: the score standardized PER DATASET (z-score across the
    models scored on that dataset; raw scales of different datasets are incomparable);
    ``s:missing:<method>`` = 1 where the pair has no score. A score flagged as degenerate
    when computed, or equal for all (>= 2) models of a dataset, counts as missing.
``t`` / ``k`` / ``x`` -- text similarity, the rich collaborative kernel and model x dataset
    interactions (see ``_similarity_block``, docs/recommenders.md).
``p`` -- specialists: the model's source task against the target task (registry match,
    twin, same VTAB group / domain, match x strength) and input resolution against the
    target's native image size (:mod:`features.specialist`).

Missing meta values get an explicit ``...:missing`` indicator column and are imputed with
the training median (never a silent zero). Dense columns are standardized with the
training rows' mean / std; one-hot columns stay 0/1. ``transform`` returns a
``scipy.sparse.csr_matrix`` (float32) whose columns are ``feature_names_``.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from history.errors import RecommenderError, SchemaMismatchError
from history.util import is_missing

from .dataset_text import dataset_text, embed_texts, source_text
from .groups import GROUP_HELP, GROUPS  # noqa: F401  (defined in groups.py, light for the CLI)
from .history_frame import HistoryFrame
from .specialist import log_image_size_median, specialist_block
from .meta_values import _cat, _informative_scores, _merge_meta, _norm_name, _num, _tf

#: Bump when the meaning or order of columns changes; saved with every trained model.
FEATURE_SCHEMA_VERSION = 1
TEXT_PCS = 8  # principal components of the dataset text embedding used as t: features
X_TEXT_PCS = 4  # of which crossed with model size / input size in x:

_MODEL_NUMERIC = {  # name -> (source column, transform)
    "input_size": ("input_size", "identity"),
    "log_params": ("params", "log1p"),
    "log_gmacs": ("gmacs", "log1p"),
    "depth": ("depth", "identity"),
    "feature_dim": ("feature_dim", "log1p"),
    "source_accuracy": ("source_accuracy", "identity"),
}
_MODEL_CATEGORICAL = {"family": "family", "pretrain": "pretrain_dataset", "domain": "domain", "modality": "modality"}
_DATASET_CATEGORICAL = {"modality": "modality", "domain": "domain"}


def parse_groups(groups) -> tuple[str, ...]:
    """``"d,m,s"`` / ``["d", "m"]`` -> ``("d", "m")`` in canonical order; rejects unknown groups."""
    if isinstance(groups, str):
        items = [g.strip() for g in re.split(r"[,+ ]", groups) if g.strip()]
    else:
        items = [str(g).strip() for g in groups]
    bad = [g for g in items if g not in GROUPS]
    if bad or not items:
        raise RecommenderError(
            f"invalid feature groups {groups!r}: use a comma-separated subset of {','.join(GROUPS)} "
            f"({', '.join(f'{k} = {v}' for k, v in GROUP_HELP.items())}), e.g. features='d,m,s'.")
    return tuple(g for g in GROUPS if g in items)


class Featurizer:
    """Learns vocabularies, imputation values, scalers and collaborative statistics from a
    training :class:`HistoryFrame`; turns (model, dataset) pairs into a named matrix.

    Parameters
    ----------
    groups : feature groups, ``"d,m,s"`` or a subset.
    dataset_ids : include the one-hot ``d:id=`` columns.
    model_ids : include the one-hot ``m:id=`` columns (default: only when ``collab`` is off).
    collab : include the collaborative statistics in the ``m`` group.
    collab_bandwidth : kernel bandwidth ``h`` of ``m:collab_kernel`` (standardized units).
    min_category_count : a categorical value seen on fewer models / datasets maps to ``other``.
    dataset_columns : extra numeric dataset-meta columns used as dense ``d:<column>`` features
        (with ``:missing`` indicators and training-median imputation), e.g. the text embedding
        of :func:`features.dataset_text.add_text_embedding`. Default: none.
    """

    def __init__(self, groups="d,m,s", *, dataset_ids: bool = True, model_ids=None, collab: bool = True,
                 collab_bandwidth: float = 1.0, min_category_count: int = 2, interactions: bool = False,
                 dataset_columns=()):
        self.groups = groups
        self.dataset_columns = dataset_columns
        self.interactions = interactions
        self.dataset_ids = dataset_ids
        self.model_ids = model_ids
        self.collab = collab
        self.collab_bandwidth = collab_bandwidth
        self.min_category_count = min_category_count

    def get_params(self) -> dict:
        return {"groups": self.groups, "dataset_ids": self.dataset_ids, "model_ids": self.model_ids,
                "collab": self.collab,
                "collab_bandwidth": self.collab_bandwidth, "min_category_count": self.min_category_count,
                "interactions": self.interactions,
                **({"dataset_columns": list(self.dataset_columns)} if self.dataset_columns else {})}

    # ------------------------------------------------------------------ fit
    def fit(self, history: HistoryFrame) -> Featurizer:
        if not isinstance(history, HistoryFrame):
            raise RecommenderError(f"Featurizer.fit expects a HistoryFrame, got {type(history).__name__}")
        self.groups_ = parse_groups(self.groups)
        t = history.targets[history.targets["value"].notna()]
        if t.empty:
            raise RecommenderError("cannot fit the featurizer: the history has no training targets.")
        self.models_meta_ = history.models.copy()
        self.datasets_meta_ = history.datasets.copy()
        self.scores_ = history.scores.copy()
        self.train_datasets_ = sorted(t["dataset"].unique())
        self.train_models_ = sorted(t["model"].unique())
        self.regimes_ = sorted(t["regime"].unique())
        self.default_regime_ = t["regime"].value_counts().idxmax()

        # per-dataset target statistics and the long table of training z-scores
        g = t.groupby("dataset")["value"]
        mu, sd = g.transform("mean"), g.transform("std", ddof=0)
        z = ((t["value"] - mu) / sd.where(sd > 0)).fillna(0.0)
        self.train_z_ = pd.DataFrame({"model": t["model"].values, "dataset": t["dataset"].values,
                                      "value": t["value"].values, "z": z.values})
        # several regimes of a pair: average (the collaborative statistics are regime-free)
        self.train_z_ = self.train_z_.groupby(["model", "dataset"], sort=True).mean().reset_index()

        # vocabularies
        mm, dm = self.models_meta_, self.datasets_meta_
        self.vocab_ = {}
        for key, col in _MODEL_CATEGORICAL.items():
            self.vocab_[f"m:{key}"] = self._vocab(_cat(mm, col))
        for key, col in _DATASET_CATEGORICAL.items():
            self.vocab_[f"d:{key}"] = self._vocab(_cat(dm, col))
        self.score_methods_ = sorted(self.scores_["method"].unique().tolist())

        # imputation values: medians over the training models / datasets
        tm = mm[mm["name"].isin(self.train_models_)]
        self.model_medians_ = {}
        for key, (col, how) in _MODEL_NUMERIC.items():
            v = _tf(_num(tm, col), how)
            self.model_medians_[key] = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
        td = dm[dm["name"].isin(self.train_datasets_)]
        draw = self._dataset_raw(td)
        self.dataset_medians_ = {k: (float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0)
                                 for k, v in {**draw, **self._dataset_extra(td)}.items()}
        # standardization of the dataset-similarity space (for the collaborative kernel)
        u = np.column_stack([np.where(np.isnan(draw[k]), self.dataset_medians_[k], draw[k])
                             for k in ("log_num_samples", "log_num_classes")]) if len(td) else np.zeros((0, 2))
        self.sim_mean_ = u.mean(0).tolist() if len(u) else [0.0, 0.0]
        self.sim_std_ = (np.where(u.std(0) > 0, u.std(0), 1.0).tolist() if len(u) else [1.0, 1.0])

        self._fit_text(mm, dm)
        inp = self.model_medians_["input_size"]
        self.log_input_median_ = float(np.log(inp)) if inp > 0 else float(np.log(224))
        self.log_image_median_ = log_image_size_median(self.train_datasets_)
        self.scale_mean_ = None
        self.scale_std_ = None
        names, dense, _ = self._dense_block(t[["model", "dataset"]].reset_index(drop=True), history, fitting=True)
        self.dense_names_ = names
        if dense.shape[0]:
            mean, std = dense.mean(0), dense.std(0)
        else:
            mean, std = np.zeros(dense.shape[1]), np.ones(dense.shape[1])
        # binary columns (missing indicators, matches) stay 0/1: standardizing a rare
        # indicator would blow it up to ~1/sqrt(p) and destabilize interaction models
        binary = np.all((dense == 0) | (dense == 1), axis=0) if dense.shape[0] else np.zeros(dense.shape[1], bool)
        mean = np.where(binary, 0.0, mean)
        std = np.where(binary, 1.0, std)
        self.scale_mean_ = mean.astype(float).tolist()
        self.scale_std_ = np.where(std > 1e-12, std, 1.0).astype(float).tolist()
        self.onehot_names_ = self._onehot_names()
        self.feature_names_ = self.dense_names_ + self.onehot_names_
        self.n_features_ = len(self.feature_names_)
        return self

    def _vocab(self, values) -> list[str]:
        s = pd.Series([v for v in values if v is not None], dtype=object)
        if s.empty:
            return []
        c = s.value_counts()
        keep = sorted(c[c >= self.min_category_count].index.tolist())
        if (c < self.min_category_count).any():
            keep.append("other")
        return keep

    @staticmethod
    def _dataset_raw(dm: pd.DataFrame) -> dict:
        ns, nc = _num(dm, "num_samples"), _num(dm, "num_classes")
        with np.errstate(invalid="ignore", divide="ignore"):
            ls = np.where(ns > 0, np.log(np.where(ns > 0, ns, 1)), np.nan)
            lc = np.where(nc > 0, np.log(np.where(nc > 0, nc, 1)), np.nan)
        return {"log_num_samples": ls, "log_num_classes": lc, "log_samples_per_class": ls - lc}

    def _dataset_extra(self, dm: pd.DataFrame) -> dict:
        """The ``dataset_columns`` values of ``dm`` (NaN where missing or absent)."""
        return {str(c): _num(dm, str(c)) for c in (self.dataset_columns or ())}

    def _use_model_ids(self) -> bool:
        """Model-id one-hots default to off when the collaborative statistics are on: the
        leave-own-dataset-out mean plus a per-model intercept would reveal the row's own
        target (``z_mt = n*mean_m - (n-1)*loo_mt``), a leak that ruins generalization."""
        return (not self.collab) if self.model_ids is None else bool(self.model_ids)

    def _onehot_names(self) -> list[str]:
        names = []
        if "d" in self.groups_:
            if self.dataset_ids:
                names += [f"d:id={n}" for n in self.train_datasets_]
            for key in _DATASET_CATEGORICAL:
                names += [f"d:{key}={v}" for v in self.vocab_[f"d:{key}"]]
            if len(self.regimes_) > 1:
                names += [f"d:regime={r}" for r in self.regimes_]
        if "m" in self.groups_:
            if self._use_model_ids():
                names += [f"m:id={n}" for n in self.train_models_]
            for key in _MODEL_CATEGORICAL:
                names += [f"m:{key}={v}" for v in self.vocab_[f"m:{key}"]]
        return names

    # ------------------------------------------------------------------ transform
    def check_is_fitted(self):
        if not hasattr(self, "feature_names_"):
            raise RecommenderError("the featurizer is not fitted; call fit(history) first.")

    def transform(self, pairs: pd.DataFrame, history: HistoryFrame | None = None) -> sp.csr_matrix:
        """Feature matrix (CSR, float32, columns ``feature_names_``) of ``pairs``.

        ``history`` supplies meta-features / MS scores of models and datasets added after
        fitting; the collaborative statistics always come from the training targets.
        """
        self.check_is_fitted()
        pairs = _check_pairs(pairs)
        _, dense, ctx = self._dense_block(pairs, history, fitting=False)
        # no clipping: measured on TG-image LODO, clipping at +-5 cut ridge's Pearson 0.854 -> 0.839
        dense = (dense - np.asarray(self.scale_mean_)) / np.asarray(self.scale_std_)
        onehot = self._onehot_block(pairs, ctx)
        X = sp.hstack([sp.csr_matrix(dense.astype(np.float32)), onehot], format="csr", dtype=np.float32)
        return X

    def fit_transform(self, history: HistoryFrame) -> sp.csr_matrix:
        self.fit(history)
        t = history.targets[history.targets["value"].notna()]
        return self.transform(t[["model", "dataset"] + (["regime"] if "regime" in t else [])], history)

    def _context(self, history, only_datasets=None):
        models = _merge_meta(self.models_meta_, None if history is None else history.models)
        datasets = _merge_meta(self.datasets_meta_, None if history is None else history.datasets)
        scores = self.scores_
        if only_datasets is not None:  # score statistics are per dataset: the others are not needed
            scores = scores[scores["dataset"].isin(only_datasets)]
        if history is not None and history.scores is not self.scores_:
            new = history.scores
            if only_datasets is not None:
                new = new[new["dataset"].isin(only_datasets)]
            scores = pd.concat([scores, new], ignore_index=True)
            scores = scores.drop_duplicates(["model", "dataset", "method"], keep="last")
        return models, datasets, _informative_scores(scores)

    def _dense_block(self, pairs: pd.DataFrame, history, fitting: bool):
        models, datasets, scores = self._context(history, only_datasets=pd.unique(pairs["dataset"]))
        n = len(pairs)
        mcodes, muniq = pd.factorize(pairs["model"], sort=False)
        dcodes, duniq = pd.factorize(pairs["dataset"], sort=False)
        mrows = models.reindex(pd.Index(muniq, name="name"))
        drows = datasets.reindex(pd.Index(duniq, name="name"))
        cols, names = [], []

        if "d" in self.groups_:
            raw = {**self._dataset_raw(drows), **self._dataset_extra(drows)}
            for key, v in raw.items():
                miss = np.isnan(v)
                cols.append(np.where(miss, self.dataset_medians_[key], v)[dcodes]); names.append(f"d:{key}")
                cols.append(miss.astype(float)[dcodes]); names.append(f"d:{key}:missing")
            if self.score_methods_:
                dmean = scores.groupby(["dataset", "method"])["value"].mean().unstack("method")
                dmean = dmean.reindex(index=pd.Index(duniq), columns=self.score_methods_)
                for meth in self.score_methods_:
                    v = dmean[meth].to_numpy(dtype=float)
                    miss = np.isnan(v)
                    cols.append(np.where(miss, 0.0, v)[dcodes]); names.append(f"d:score_mean:{meth}")
                    cols.append(miss.astype(float)[dcodes]); names.append(f"d:score_mean:{meth}:missing")

        if "m" in self.groups_:
            for key, (col, how) in _MODEL_NUMERIC.items():
                v = _tf(_num(mrows, col), how)
                miss = np.isnan(v)
                cols.append(np.where(miss, self.model_medians_[key], v)[mcodes]); names.append(f"m:{key}")
                cols.append(miss.astype(float)[mcodes]); names.append(f"m:{key}:missing")
            mp = np.array([_norm_name(x) if x is not None else "" for x in _cat(mrows, "pretrain_dataset")])
            dn = np.array([_norm_name(x) for x in duniq])
            match = (mp[mcodes] == dn[dcodes]) & (mp[mcodes] != "")
            cols.append(match.astype(float)); names.append("m:pretrain_matches_dataset")
            if self.collab:
                c_names, c_cols = self._collab(mcodes, muniq, dcodes, duniq, drows)
                names += c_names; cols += c_cols
            if self.interactions and "d" in self.groups_:
                x_names, x_cols = self._interactions(mrows, mcodes, drows, dcodes)
                names += x_names; cols += x_cols

        if "s" in self.groups_ and self.score_methods_:
            sc = scores[scores["method"].isin(self.score_methods_)]
            g = sc.groupby(["dataset", "method"])["value"]
            mu, sd = g.transform("mean"), g.transform("std", ddof=0)
            zz = ((sc["value"] - mu) / sd.where(sd > 0)).fillna(0.0)
            wide = pd.DataFrame({"model": sc["model"], "dataset": sc["dataset"], "method": sc["method"], "z": zz})
            wide = wide.pivot_table(index=["model", "dataset"], columns="method", values="z", aggfunc="mean")
            wide = wide.reindex(columns=self.score_methods_)
            idx = wide.index.get_indexer(pd.MultiIndex.from_arrays([pairs["model"], pairs["dataset"]])) \
                if len(wide) else np.full(n, -1)
            vals = wide.to_numpy(dtype=float) if len(wide) else np.zeros((0, len(self.score_methods_)))
            for j, meth in enumerate(self.score_methods_):
                v = np.where(idx >= 0, vals[np.maximum(idx, 0), j] if len(vals) else np.nan, np.nan)
                miss = np.isnan(v)
                cols.append(np.where(miss, 0.0, v)); names.append(f"s:z:{meth}")
                cols.append(miss.astype(float)); names.append(f"s:missing:{meth}")

        if "p" in self.groups_:
            p_names, p_cols = specialist_block(mrows, mcodes, muniq, duniq, dcodes, train_z=self.train_z_,
                                               log_input_median=self.log_input_median_,
                                               log_image_median=self.log_image_median_)
            names += p_names; cols += p_cols

        if set(self.groups_) & {"t", "k", "x"}:
            e_names, e_cols = self._similarity_block(mrows, mcodes, muniq, drows, dcodes, duniq, fitting)
            names += e_names; cols += e_cols

        dense = np.column_stack(cols) if cols else np.zeros((n, 0))
        if not fitting and names != self.dense_names_:
            raise SchemaMismatchError(
                "feature columns computed now differ from those the featurizer was fitted with "
                f"({len(names)} vs {len(self.dense_names_)}); refit the recommender.")
        return names, dense.astype(float), (models, datasets)

    # ------------------------------------------------------------------ t / k / x groups
    def _fit_text(self, mm, dm) -> None:
        """Text embeddings of the datasets and of the models' source datasets, and their
        principal components (fitted on the training datasets' embeddings: descriptions only,
        never a fine-tuning result). Only when a ``t`` / ``k`` / ``x`` group is selected."""
        self.text_keys_, self.text_emb_ = [], []
        self.text_pca_mean_, self.text_pca_ = [], []
        self.text_dist_scale_, self.kernel_h2_, self.src_sim_fill_ = 1.0, 1.0, 0.0
        if not set(self.groups_) & {"t", "k", "x"}:
            return
        keys, texts = self._text_items(dm, mm)
        emb = _embed(texts)
        self.text_keys_ = keys
        self.text_emb_ = [None if e is None else [float(v) for v in e] for e in emb]
        table = dict(zip(keys, emb))
        E = [table.get(f"d:{d}") for d in self.train_datasets_]
        E = np.stack([e for e in E if e is not None]) if any(e is not None for e in E) else np.zeros((0, 1))
        if len(E) >= 2:
            mu = E.mean(0)
            _, _, vt = np.linalg.svd(E - mu, full_matrices=False)
            comps = vt[:TEXT_PCS]
            proj = (E - mu) @ comps.T
            signs = np.sign(proj[np.abs(proj).argmax(0), np.arange(comps.shape[0])])
            comps = comps * np.where(signs == 0, 1, signs)[:, None]
            self.text_pca_mean_, self.text_pca_ = mu.tolist(), comps.tolist()
            dist = 1.0 - E @ E.T
            off = dist[~np.eye(len(E), dtype=bool)]
            self.text_dist_scale_ = float(max(np.mean(off), 1e-6))
        # kernel bandwidth: the median squared distance between training datasets
        td = self.datasets_meta_.set_index("name", drop=False).reindex(pd.Index(self.train_datasets_))
        if len(td) >= 2:
            d2 = self._rich_d2(td, td)
            off = d2[~np.eye(len(td), dtype=bool)]
            self.kernel_h2_ = float(max(np.median(off), 1e-6))

    @staticmethod
    def _text_items(dm, mm) -> tuple[list, list]:
        keys, texts = [], []
        extra = dm["extra"] if "extra" in dm.columns else pd.Series([None] * len(dm), index=dm.index)
        for name, ex in zip(dm["name"], extra):
            keys.append(f"d:{name}")
            texts.append(dataset_text(name, ex) or source_text(name))
        for src in sorted({v for v in _cat(mm, "pretrain_dataset") if v is not None}):
            keys.append(f"s:{src}")
            texts.append(source_text(src))
        return keys, texts

    def _text_lookup(self, keys, texts_fn) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [n, dim], known [n]) of ``keys``; keys unseen at fit time are embedded
        now from ``texts_fn(key)`` (the sentence model is loaded only then)."""
        table = getattr(self, "_text_table", None)
        if table is None or len(table) != len(self.text_keys_):
            table = {k: (None if e is None else np.asarray(e, float)) for k, e in zip(self.text_keys_, self.text_emb_)}
            self._text_table = table
        new = [k for k in dict.fromkeys(keys) if k not in table]
        if new:
            for k, e in zip(new, _embed([texts_fn(k) for k in new])):
                table[k] = e
        dim = next((len(e) for e in table.values() if e is not None), 1)
        known = np.array([table.get(k) is not None for k in keys], dtype=bool)
        E = np.zeros((len(keys), dim))
        for i, k in enumerate(keys):
            if known[i]:
                E[i] = table[k]
        return E, known

    def _dataset_emb(self, drows) -> tuple[np.ndarray, np.ndarray]:
        names = [str(n) for n in drows.index]
        extra = dict(zip(names, drows["extra"])) if "extra" in drows.columns else {}
        return self._text_lookup([f"d:{n}" for n in names],
                                 lambda k: dataset_text(k[2:], extra.get(k[2:])) or source_text(k[2:]))

    def _source_emb(self, mrows) -> tuple[np.ndarray, np.ndarray]:
        src = _cat(mrows, "pretrain_dataset")
        keys = [f"s:{v}" if v is not None else "s:" for v in src]
        E, known = self._text_lookup([k for k in keys if k != "s:"] or [], lambda k: source_text(k[2:]))
        out = np.zeros((len(keys), E.shape[1] if len(E) else 1))
        ok = np.zeros(len(keys), dtype=bool)
        j = 0
        for i, k in enumerate(keys):
            if k != "s:":
                out[i], ok[i] = E[j], known[j]
                j += 1
        return out, ok

    def _text_pcs(self, E, known) -> tuple[np.ndarray, np.ndarray]:
        """Principal components (``TEXT_PCS`` columns, 0 = the training mean where unknown) and
        the missing mask."""
        if not self.text_pca_:
            return np.zeros((len(E), TEXT_PCS)), np.ones(len(E), dtype=bool)
        comps = np.asarray(self.text_pca_)
        P = np.zeros((len(E), TEXT_PCS))
        if len(E):
            P[:, :comps.shape[0]] = (E - np.asarray(self.text_pca_mean_)) @ comps.T
        P[~known] = 0.0
        return P, ~known

    def _rich_d2(self, dq, dt) -> np.ndarray:
        """Squared distance between datasets ``dq`` and ``dt`` (meta rows indexed by name): the
        standardized (log #samples, log #classes) of the old kernel, plus the text distance
        ``(1 - cos) / mean training (1 - cos)`` where both have an embedding (else its average,
        1), plus 1 where both domains are known and differ (0.5 where one is unknown)."""
        uq, ut = self._sim_coords(dq), self._sim_coords(dt)
        d2 = ((uq[:, None, :] - ut[None, :, :]) ** 2).sum(-1)
        Eq, kq = self._dataset_emb(dq)
        Et, kt = self._dataset_emb(dt)
        tdist = (1.0 - Eq @ Et.T) / self.text_dist_scale_
        both = kq[:, None] & kt[None, :]
        d2 = d2 + np.where(both, tdist, 1.0)
        gq, gt = _cat(dq, "domain"), _cat(dt, "domain")
        known = np.array([g is not None for g in gq])[:, None] & np.array([g is not None for g in gt])[None, :]
        differ = np.array(gq, dtype=object)[:, None] != np.array(gt, dtype=object)[None, :]
        return d2 + np.where(known, differ.astype(float), 0.5)

    def _similarity_block(self, mrows, mcodes, muniq, drows, dcodes, duniq, fitting):
        names, cols = [], []
        Ed, kd = self._dataset_emb(drows)
        if "t" in self.groups_:
            P, miss = self._text_pcs(Ed, kd)
            for i in range(TEXT_PCS):
                names.append(f"t:emb_{i}"); cols.append(P[dcodes, i])
            names.append("t:emb:missing"); cols.append(miss.astype(float)[dcodes])
            Es, ks = self._source_emb(mrows)
            sim = np.einsum("ij,ij->i", Ed[dcodes], Es[mcodes]) if len(dcodes) else np.zeros(0)
            ok = kd[dcodes] & ks[mcodes]
            if fitting:
                self.src_sim_fill_ = float(np.median(sim[ok])) if ok.any() else 0.0
            names.append("t:src_sim"); cols.append(np.where(ok, sim, self.src_sim_fill_))
            names.append("t:src_sim:missing"); cols.append((~ok).astype(float))
        if "k" in self.groups_:
            k_names, k_cols = self._rich_collab(mcodes, muniq, dcodes, duniq, drows)
            names += k_names; cols += k_cols
        if "x" in self.groups_:
            if not (self.interactions and "d" in self.groups_ and "m" in self.groups_):
                x_names, x_cols = self._interactions(mrows, mcodes, drows, dcodes)
                names += x_names; cols += x_cols
            gm, gd = _cat(mrows, "domain"), _cat(drows, "domain")
            both = np.array([v is not None for v in gm])[mcodes] & np.array([v is not None for v in gd])[dcodes]
            same = np.array(gm, dtype=object)[mcodes] == np.array(gd, dtype=object)[dcodes]
            names.append("x:domain_match"); cols.append((both & same).astype(float))
            names.append("x:domain_match:missing"); cols.append((~both).astype(float))
            P, _ = self._text_pcs(Ed, kd)
            for mk in ("log_params", "input_size"):
                col, how = _MODEL_NUMERIC[mk]
                mv = _tf(_num(mrows, col), how)
                mv = np.where(np.isnan(mv), self.model_medians_[mk], mv) - self.model_medians_[mk]
                for i in range(X_TEXT_PCS):
                    names.append(f"x:{mk}*t:emb_{i}"); cols.append(mv[mcodes] * P[dcodes, i])
        return names, cols

    def _rich_collab(self, mcodes, muniq, dcodes, duniq, drows):
        """``k:`` collaborative statistics over the rich dataset similarity (leave-own-out):
        ``k:collab_sim`` the model's training z-scores weighted by ``exp(-d2 / h2)`` (``h2`` the
        median training distance), ``k:collab_nn`` its z on the most similar training dataset it
        has, ``k:sim_max`` that dataset's similarity, and ``k:collab:missing``."""
        tz = self.train_z_
        tm, td = pd.Index(self.train_models_), pd.Index(self.train_datasets_)
        ri, ci = tm.get_indexer(tz["model"]), td.get_indexer(tz["dataset"])
        Z = np.zeros((len(tm), len(td))); M = np.zeros((len(tm), len(td)))
        Z[ri, ci] = tz["z"].to_numpy(); M[ri, ci] = 1.0
        dt = self.datasets_meta_.set_index("name", drop=False).reindex(td)
        W = np.exp(-self._rich_d2(drows, dt) / self.kernel_h2_)  # [n_unique_datasets, n_train]
        own = td.get_indexer(pd.Index(duniq))
        W[np.arange(len(duniq))[own >= 0], own[own >= 0]] = 0.0
        rows = tm.get_indexer(pd.Index(muniq))[mcodes]
        n = len(mcodes)
        sim_z, nn_z, smax = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        sel = np.nonzero(rows >= 0)[0]
        if len(sel):
            num, den = (Z @ W.T), (M @ W.T)
            r, c = rows[sel], dcodes[sel]
            with np.errstate(invalid="ignore", divide="ignore"):
                sim_z[sel] = np.where(den[r, c] > 1e-12, num[r, c] / np.where(den[r, c] > 1e-12, den[r, c], 1), np.nan)
            # the most similar training dataset the model has (ties: first), per (model, dataset)
            Wr = W[c]  # [len(sel), n_train]
            have = M[r] > 0
            Wh = np.where(have & (Wr > 0), Wr, -1.0)
            j = Wh.argmax(1)
            okn = Wh[np.arange(len(sel)), j] > 0
            nn_z[sel] = np.where(okn, Z[r, j], np.nan)
            smax[sel] = np.where(okn, Wh[np.arange(len(sel)), j], np.nan)
        miss = np.isnan(sim_z)
        return (["k:collab_sim", "k:collab_nn", "k:sim_max", "k:collab:missing"],
                [np.where(miss, 0.0, sim_z), np.where(np.isnan(nn_z), 0.0, nn_z), np.where(np.isnan(smax), 0.0, smax),
                 miss.astype(float)])

    #: (model column, dataset column) pairs of ``x:`` interaction features
    _INTERACTIONS = (("input_size", "log_num_classes"), ("input_size", "log_samples_per_class"),
                     ("input_size", "log_num_samples"), ("log_params", "log_num_classes"),
                     ("log_params", "log_samples_per_class"), ("log_params", "log_num_samples"))

    def _interactions(self, mrows, mcodes, drows, dcodes):
        """``x:<m>*<d>`` = (m - median_m) * (d - median_d), imputed values, training medians.

        Lets a linear model learn e.g. that high input resolution pays off more on
        fine-grained datasets with few samples per class (Stanford Cars, DTD).
        """
        draw = self._dataset_raw(drows)
        names, cols = [], []
        for mk, dk in self._INTERACTIONS:
            col, how = _MODEL_NUMERIC[mk]
            mv = _tf(_num(mrows, col), how)
            mv = np.where(np.isnan(mv), self.model_medians_[mk], mv) - self.model_medians_[mk]
            dv = np.where(np.isnan(draw[dk]), self.dataset_medians_[dk], draw[dk]) - self.dataset_medians_[dk]
            names.append(f"x:{mk}*{dk}"); cols.append(mv[mcodes] * dv[dcodes])
        return names, cols

    def dataset_weights(self, datasets, history=None, train_datasets=None) -> np.ndarray:
        """Kernel weights ``[len(datasets), len(train_datasets)]`` between datasets by their
        meta-features: ``exp(-||u_q - u_t||^2 / h^2)`` with ``u`` = standardized (log #samples,
        log #classes) and ``h = collab_bandwidth`` -- the weighting of ``m:collab_kernel``.
        ``datasets`` unknown at fit time take their meta-features from ``history``;
        ``train_datasets`` defaults to the training datasets."""
        _, drows, _ = self._context(history)
        td = pd.Index(self.train_datasets_ if train_datasets is None else list(train_datasets))
        u_q = self._sim_coords(drows.reindex(pd.Index([str(d) for d in datasets], name="name")))
        u_t = self._sim_coords(self.datasets_meta_.set_index("name", drop=False).reindex(td))
        return self._kernel(u_q, u_t)

    def _kernel(self, u_q, u_t) -> np.ndarray:
        d2 = ((u_q[:, None, :] - u_t[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / max(float(self.collab_bandwidth), 1e-6) ** 2)

    def _sim_coords(self, drows) -> np.ndarray:
        raw = self._dataset_raw(drows)
        u = np.column_stack([np.where(np.isnan(raw[k]), self.dataset_medians_[k], raw[k])
                             for k in ("log_num_samples", "log_num_classes")])
        return (u - np.asarray(self.sim_mean_)) / np.asarray(self.sim_std_)

    def _collab(self, mcodes, muniq, dcodes, duniq, drows):
        tz = self.train_z_
        tm = pd.Index(self.train_models_)
        td = pd.Index(self.train_datasets_)
        ri, ci = tm.get_indexer(tz["model"]), td.get_indexer(tz["dataset"])
        shape = (len(tm), len(td))
        Z = np.zeros(shape); A = np.zeros(shape); M = np.zeros(shape)
        Z[ri, ci] = tz["z"].to_numpy(); A[ri, ci] = tz["value"].to_numpy(); M[ri, ci] = 1.0
        # weights [n_unique_datasets, n_train_datasets]; own dataset gets 0 (leave-own-out)
        own = td.get_indexer(pd.Index(duniq))
        W1 = np.ones((len(duniq), len(td)))
        u_q = self._sim_coords(drows)
        u_t = self._sim_coords(self.datasets_meta_.set_index("name", drop=False).reindex(td))
        Wk = self._kernel(u_q, u_t)
        for W in (W1, Wk):
            W[np.arange(len(duniq))[own >= 0], own[own >= 0]] = 0.0
        mi = tm.get_indexer(pd.Index(muniq))  # -1 for a model without training targets
        rows = mi[mcodes]

        def agg(V, W):
            num, den = V @ W.T, M @ W.T  # [n_train_models, n_unique_datasets]
            out = np.full(len(mcodes), np.nan)
            sel = rows >= 0
            nn, dd = num[rows[sel], dcodes[sel]], den[rows[sel], dcodes[sel]]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[sel] = np.where(dd > 1e-12, nn / np.where(dd > 1e-12, dd, 1), np.nan)
            return out

        mean_z = agg(Z, W1)
        kern_z = agg(Z, Wk)
        mean_a = agg(A, W1)
        cnt = np.zeros(len(mcodes))
        sel = rows >= 0
        cnt[sel] = (M @ W1.T)[rows[sel], dcodes[sel]]
        miss = np.isnan(mean_z)
        kern_z = np.where(np.isnan(kern_z), mean_z, kern_z)
        acc_fill = float(np.nanmedian(A[M > 0])) if M.any() else 0.0
        names = ["m:collab_mean", "m:collab_kernel", "m:collab_acc", "m:collab_log_n", "m:collab:missing"]
        cols = [np.where(miss, 0.0, mean_z), np.where(np.isnan(kern_z), 0.0, kern_z),
                np.where(np.isnan(mean_a), acc_fill, mean_a), np.log1p(cnt), miss.astype(float)]
        return names, cols

    def _onehot_block(self, pairs, ctx) -> sp.csr_matrix:
        models, datasets = ctx
        n = len(pairs)
        col_index = {name: j for j, name in enumerate(self.onehot_names_)}
        rows_all, cols_all = [], []

        def emit(prefix, per_row_values, vocab):
            if not vocab:
                return
            vs = pd.Series(per_row_values, dtype=object)
            if "other" in vocab:
                vs = vs.map(lambda v: v if v is None or f"{prefix}={v}" in col_index else "other")
            j = vs.map(lambda v: col_index.get(f"{prefix}={v}", -1) if v is not None else -1).to_numpy(dtype=np.int64)
            r = np.nonzero(j >= 0)[0]
            rows_all.append(r); cols_all.append(j[r])

        mcodes, muniq = pd.factorize(pairs["model"], sort=False)
        dcodes, duniq = pd.factorize(pairs["dataset"], sort=False)
        if "d" in self.groups_:
            drows = datasets.reindex(pd.Index(duniq, name="name"))
            if self.dataset_ids:
                emit("d:id", np.asarray(duniq, dtype=object)[dcodes], self.train_datasets_)
            for key, col in _DATASET_CATEGORICAL.items():
                emit(f"d:{key}", _cat(drows, col)[dcodes], self.vocab_[f"d:{key}"])
            if len(self.regimes_) > 1:
                reg = pairs["regime"].fillna(self.default_regime_) if "regime" in pairs \
                    else pd.Series(self.default_regime_, index=pairs.index)
                emit("d:regime", reg.astype(str).to_numpy(dtype=object), self.regimes_)
        if "m" in self.groups_:
            mrows = models.reindex(pd.Index(muniq, name="name"))
            if self._use_model_ids():
                # map through unique models (fast for 10^4 models x 10^6 rows)
                j = np.array([col_index.get(f"m:id={m}", -1) for m in muniq], dtype=np.int64)[mcodes] \
                    if len(muniq) else np.zeros(0, dtype=np.int64)
                r = np.nonzero(j >= 0)[0]
                rows_all.append(r); cols_all.append(j[r])
            for key, col in _MODEL_CATEGORICAL.items():
                vals = _cat(mrows, col)
                vocab = self.vocab_[f"m:{key}"]
                if not vocab:
                    continue
                ju = np.array([col_index.get(f"m:{key}={v}", col_index.get(f"m:{key}=other", -1))
                               if v is not None else -1 for v in vals], dtype=np.int64)
                j = ju[mcodes] if len(ju) else np.zeros(0, dtype=np.int64)
                r = np.nonzero(j >= 0)[0]
                rows_all.append(r); cols_all.append(j[r])
        if rows_all:
            r = np.concatenate(rows_all); c = np.concatenate(cols_all)
        else:
            r = c = np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, len(self.onehot_names_)))

    # ------------------------------------------------------------------ state
    def schema(self) -> dict:
        """The feature schema: version, groups and column names (saved with every model)."""
        self.check_is_fitted()
        return {"version": FEATURE_SCHEMA_VERSION, "groups": list(self.groups_),
                "feature_names": list(self.feature_names_)}

    _STATE_ATTRS = ("groups_", "train_datasets_", "train_models_", "regimes_", "default_regime_", "vocab_",
                    "score_methods_", "model_medians_", "dataset_medians_", "sim_mean_", "sim_std_",
                    "scale_mean_", "scale_std_", "dense_names_", "onehot_names_", "feature_names_", "n_features_",
                    "text_keys_", "text_emb_", "text_pca_mean_", "text_pca_", "text_dist_scale_", "kernel_h2_",
                    "src_sim_fill_", "log_input_median_", "log_image_median_")
    #: state attributes a featurizer saved before the t / k / x groups lacks (loaded with these values)
    _STATE_DEFAULTS = {"text_keys_": [], "text_emb_": [], "text_pca_mean_": [], "text_pca_": [],
                       "text_dist_scale_": 1.0, "kernel_h2_": 1.0, "src_sim_fill_": 0.0,
                       "log_input_median_": float(np.log(224)), "log_image_median_": float(np.log(224))}

    def get_state(self) -> tuple[dict, dict[str, pd.DataFrame]]:
        """(JSON-able dict, tables to save as parquet) -- everything ``transform`` needs."""
        self.check_is_fitted()
        state = {"params": self.get_params(), "schema_version": FEATURE_SCHEMA_VERSION}
        for a in self._STATE_ATTRS:
            v = getattr(self, a)
            state[a] = list(v) if isinstance(v, tuple) else v
        tables = {"models_meta": _jsonify_extra(self.models_meta_),
                  "datasets_meta": _jsonify_extra(self.datasets_meta_),
                  "scores": self.scores_.reset_index(drop=True), "train_z": self.train_z_}
        return state, tables

    @classmethod
    def from_state(cls, state: dict, tables: dict[str, pd.DataFrame]) -> Featurizer:
        ver = state.get("schema_version")
        if ver != FEATURE_SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"the saved featurizer has feature schema version {ver}, this version of the tool "
                f"uses {FEATURE_SCHEMA_VERSION}; retrain the recommender (recommender train ...).")
        f = cls(**state["params"])
        for a in cls._STATE_ATTRS:
            if a not in state and a in cls._STATE_DEFAULTS:
                state = {**state, a: cls._STATE_DEFAULTS[a]}
            if a not in state:
                raise SchemaMismatchError(f"the saved featurizer state lacks {a!r}; retrain the recommender.")
            setattr(f, a, state[a])
        f.groups_ = tuple(f.groups_)
        f.models_meta_ = _unjsonify_extra(tables["models_meta"])
        f.datasets_meta_ = _unjsonify_extra(tables["datasets_meta"])
        f.scores_ = tables["scores"]
        f.train_z_ = tables["train_z"]
        if f.dense_names_ + f.onehot_names_ != f.feature_names_ or f._onehot_names() != f.onehot_names_:
            raise SchemaMismatchError("the saved feature names do not match the featurizer state; "
                                      "the files were edited or written by another version. Retrain.")
        return f


def _embed(texts) -> list:
    return embed_texts(texts)


def check_pairs(pairs) -> pd.DataFrame:
    """``pairs`` as a frame with ``model`` and ``dataset`` columns, or a clear error."""
    return _check_pairs(pairs)


def _check_pairs(pairs) -> pd.DataFrame:
    if not isinstance(pairs, pd.DataFrame):
        pairs = pd.DataFrame(pairs, columns=["model", "dataset"])
    missing = [c for c in ("model", "dataset") if c not in pairs.columns]
    if missing:
        raise RecommenderError(f"pairs need columns 'model' and 'dataset'; missing {missing} "
                               f"(have {list(pairs.columns)})")
    out = pairs.reset_index(drop=True).copy()
    out["model"] = out["model"].astype(str)
    out["dataset"] = out["dataset"].astype(str)
    return out


def _jsonify_extra(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object and c != "name":
            if df[c].map(lambda v: isinstance(v, (dict, list))).any() or c == "extra":
                df[c] = df[c].map(lambda v: None if is_missing(v)
                                  else json.dumps(v, sort_keys=True, default=str))
            else:
                df[c] = df[c].map(lambda v: None if is_missing(v) else str(v))
    return df.reset_index(drop=True)


def _unjsonify_extra(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "extra" in df.columns:
        df["extra"] = df["extra"].map(lambda v: json.loads(v) if isinstance(v, str) else None)
    return df
