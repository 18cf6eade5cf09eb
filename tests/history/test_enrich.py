"""Offline model meta-features (history/enrich.py, history/model_names.py): real stores, real configs, no weights."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from history import enrich as E
from history import model_names as N
from history.importers import get_importer
from history.store import HistoryStore

pytest.importorskip("transformers")


def _nan(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------------- pretraining table
@pytest.mark.parametrize("text, key, domain", [
    ("imagenet", "imagenet", "objects"),
    ("in1k", "imagenet", "objects"),
    ("imagenet-21k", "imagenet-21k", "objects"),
    ("in21k-selfsl", "imagenet-21k", "objects"),
    ("jigsaw_imagenet22k", "imagenet-21k", "objects"),
    ("semisup_instagram", "instagram", "web"),
    ("mask-rcnn_fpn_lvis_144219035", "lvis", "objects"),
    ("mask-rcnn_fpn_cityscapes_142423278", "cityscapes", "driving"),
    ("faster-rcnn_c4_137257644", "coco", "objects"),
    ("supervised_places205", "places", "scenes"),
    ("eurosat", "eurosat", "remote-sensing"),
    ("nabird", "nabird", "fine-grained"),
    ("hfpics", "hfpics", "web"),
    ("laion2b", "laion", "web"),
])
def test_pretrain_table(text, key, domain):
    assert N.pretrain_key(text) == key
    assert N.pretrain_domain(key) == domain


def test_every_table_domain_is_named_and_unknown_stays_unknown():
    assert all(desc and dom for desc, dom in N.PRETRAIN_TABLE.values())
    assert N.pretrain_key("some_private_data") is None and N.pretrain_domain(None) is None
    assert N.pretrain_key(float("nan")) is None


@pytest.mark.parametrize("model, key", [
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", "imagenet-21k"),
    ("resnet50.a1_in1k", "imagenet"),
    ("convnext_base.clip_laion2b_augreg_ft_in12k_in1k", "laion"),
    ("resnet50.fb_swsl_ig1b_ft_in1k", "instagram"),
    ("resnet50", None),
])
def test_timm_tag_names_the_data_before_fine_tuning(model, key):
    assert N.timm_tag_pretrain(model) == key


# ---------------------------------------------------------------------- name parsing + counting
@pytest.mark.parametrize("name, modality, fam, variant", [
    ("google/vit-large-patch16-224", "image", "vit", "large"),
    ("facebook/deit-small-distilled-patch16-224", "image", "deit", "small"),
    ("microsoft/swin-base-patch4-window12-384", "image", "swin", "base"),
    ("nvidia/mit-b2", "image", "segformer", "b2"),
    ("bert-large-uncased", "text", "bert", "large"),
    ("cross-encoder/ms-marco-MiniLM-L-4-v2", "text", "minilm", "base"),
    ("Jeevesh8/bert_ft_cola-60", "text", "bert", "base"),
])
def test_parse_hf_name(name, modality, fam, variant):
    spec, why = N.parse_hf_name(name, modality)
    assert spec is not None, why
    assert (spec.family, spec.variant) == (fam, variant)


def test_a_name_without_architecture_is_unknown_with_a_reason():
    spec, why = N.parse_hf_name("osanseviero/hot_dog_or_sandwich", "image")
    assert spec is None and "no architecture" in why
    spec, why = N.parse_hf_name("davanstrien/convnext_flyswot", "image")
    assert spec is None and why.startswith("convnext:")


@pytest.mark.slow  # builds transformers configs on the meta device (first import ~10 s)
def test_variant_from_stored_params():
    spec, _ = N.parse_hf_name("facebook/deit-cats", "image", family="vit", params=22.1e6)
    assert (spec.family, spec.variant, spec.how) == ("deit", "small", "params")
    spec, why = N.parse_hf_name("facebook/deit-odd", "image", family="vit", params=1e3)
    assert spec is None and "within 10%" in why


@pytest.mark.slow  # builds transformers configs on the meta device (first import ~10 s)
def test_counted_architectures_agree_with_timm_and_structure():
    """Two independent sources for the same architecture: our FLOP count and timm's table."""
    bench = E.load_timm_benchmark(E.Path(__file__).resolve().parents[3] / "shared" / "data" / "timm")
    if not bench:
        pytest.skip("timm benchmark table not found")
    vit = N.count(N.Spec("vit", "base", 224, patch=16))
    p, g = bench[("vit_base_patch16_224", 224)]
    assert abs(vit["gmacs"] - g) / g < 0.02 and abs(vit["params"] - p) / p < 0.02
    assert (vit["depth"], vit["feature_dim"]) == (12, 768)
    conv = N.count(N.Spec("convnext", "tiny", 224))
    p, g = bench[("convnext_tiny", 224)]
    assert abs(conv["gmacs"] - g) / g < 0.02 and conv["depth"] == 18 and conv["feature_dim"] == 768
    b128 = N.count(N.Spec("bert", "base"))
    large = N.count(N.Spec("bert", "large"))
    assert large["gmacs"] > 3 * b128["gmacs"] > 0 and b128["depth"] == 12


# ---------------------------------------------------------------------- enrich on a store
def _small_store(tmp_path):
    s = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    jobs = [
        {"model": "google/vit-base-patch16-224", "dataset": "cifar100", "value": 0.9, "source": "tg"},
        {"model": "bert-base-uncased", "dataset": "glue/cola", "value": 0.8, "source": "shift"},
        {"model": "someone/unlisted_classifier", "dataset": "cifar100", "value": 0.5, "source": "shift"},
        {"model": "resnet50@nabird", "dataset": "cub200", "value": 0.6, "source": "parc"},
    ]
    models = [
        {"name": "google/vit-base-patch16-224", "modality": "image", "family": "vit", "params": 86.6e6,
         "input_size": 224, "pretrain_dataset": "imagenet-21k"},
        {"name": "bert-base-uncased", "modality": "text", "params": 123.0},  # a stored value is kept
        {"name": "someone/unlisted_classifier", "modality": "image"},  # in no facts table
        {"name": "resnet50@nabird", "modality": "image", "architecture": "resnet50", "family": "resnet",
         "depth": 50, "pretrain_dataset": "nabird"},
    ]
    s.commit(models=models, jobs=jobs)
    return s


@pytest.mark.slow  # builds transformers configs on the meta device (first import ~10 s)
def test_enrich_fills_only_missing_and_is_idempotent(tmp_path):
    s = _small_store(tmp_path)
    before = s.models_frame().set_index("name")
    rep = E.enrich(s, timm_dir=tmp_path / "no-timm-here")
    after = s.models_frame().set_index("name")
    for name in before.index:  # nothing stored was changed
        for f in E.FIELDS:
            if not _nan(before.at[name, f]):
                assert after.at[name, f] == before.at[name, f], (name, f)
    assert after.at["bert-base-uncased", "params"] == 123.0
    assert after.at["bert-base-uncased", "family"] == "bert" and after.at["bert-base-uncased", "gmacs"] > 5
    vit = after.loc["google/vit-base-patch16-224"]
    assert vit["gmacs"] > 10 and vit["depth"] == 12 and vit["feature_dim"] == 768 and vit["domain"] == "objects"
    r50 = after.loc["resnet50@nabird"]
    assert (r50["gmacs"], r50["params"], r50["domain"]) == (
        N.PARC_ARCH["resnet50"]["gmacs"], N.PARC_ARCH["resnet50"]["params"], "fine-grained")
    assert _nan(after.at["someone/unlisted_classifier", "gmacs"])
    why = rep.sources["shift"].unknown["gmacs"]
    assert sum(why.values()) == 1 and "no architecture" in next(iter(why))
    assert after.at["google/vit-base-patch16-224", "extra"]["enrich_gmacs"].startswith("transformers config")
    again = E.enrich(s, timm_dir=tmp_path / "no-timm-here")
    assert again.models_updated == 0
    pd.testing.assert_frame_equal(after, s.models_frame().set_index("name"))
    s.dispose()


@pytest.mark.slow  # imports three real histories and counts ~30 architectures (~1 min on 2 cores)
def test_real_histories_structural_facts(shared_data, tmp_path):
    s = HistoryStore(f"sqlite:///{tmp_path / 'real.db'}")
    for imp, folder in (("timm", "timm"), ("parc", "parc"), ("transfergraph", "transfergraph-image")):
        get_importer(imp).run(s, shared_data / folder)
    before = s.models_frame().set_index("name")
    rep = E.enrich(s)  # finds the timm table through the store's import log
    assert rep.timm_table is not None
    after = s.models_frame().set_index("name")
    bench = E.load_timm_benchmark(shared_data / "timm")
    jobs = s.jobs_frame()
    src = jobs.groupby("model")["source"].agg(set)
    domains = E._domains()
    n_checked = 0
    for name, row in after.iterrows():
        srcs = src.get(name, set())
        if "timm" in srcs:
            hit = bench.get((row["architecture"], int(row["input_size"])))
            if hit is not None:  # the table's GMACs for the architecture at the model's input size
                assert row["gmacs"] == hit[1], name
                n_checked += 1
            assert row["domain"] in domains and row["pretrain_dataset"], name
        if srcs & {"parc", "parc-controlled"}:
            t = N.PARC_ARCH[row["architecture"]]
            assert (row["params"], row["gmacs"], row["input_size"]) == (t["params"], t["gmacs"], t["input_size"])
            assert row["domain"] in domains, name
        for f in E.FIELDS:  # fill-only: every stored value is unchanged (timm's domain tag aside)
            old = before.at[name, f]
            if not _nan(old) and not (f == "domain" and "timm" in srcs):
                assert after.at[name, f] == old, (name, f)
    assert n_checked > 1000
    for s_name, r in rep.sources.items():  # every model is counted, and every gap has a reason
        for f in E.FIELDS:
            assert r.have[f] + sum(r.unknown.get(f, {}).values()) == r.models, (s_name, f)
    s.dispose()


# ---------------------------------------------------------------------- the model facts table
_FACTS = N.load_model_facts()


def test_facts_table_ships_and_every_entry_names_its_source():
    assert len(_FACTS) >= 40
    for name, f in _FACTS.items():
        assert f["url"].startswith("https://"), name
        assert f["evidence"], name
        assert f.get("base") or f.get("config") or (
            f.get("family") and (f.get("params") or 0) + (f.get("weights_mb") or 0) > 0), name


@pytest.mark.slow  # builds transformers configs on the meta device (~1 s per distinct architecture)
@pytest.mark.parametrize("name", sorted(_FACTS))
def test_every_fact_resolves(name):
    """Each entry resolves to a counted architecture, or (family not modelled) says why; a
    parameter count from the source agrees with the architecture it resolves to."""
    f = _FACTS[name]
    modality = "image" if f.get("base") else "text"
    spec, why = N.spec_from_fact(f, modality)
    if spec is None:
        assert f["family"] not in ("bert", "distilbert", "roberta", "xlm-roberta", "electra"), why
        assert "not modelled" in why
        return
    c = N.count(spec)
    assert c["gmacs"] > 0 and c["depth"] and c["feature_dim"]
    if f.get("params"):  # the implied vocabulary makes the counted backbone match the source's count
        assert abs(c["params"] - f["params"]) / f["params"] < 0.01, (c["params"], f["params"])
    if f.get("weights_mb"):  # the weight file on the Hub agrees with the architecture (base or sized)
        assert any(abs(c["params"] - f["weights_mb"] * 1e6 / b) / (f["weights_mb"] * 1e6 / b) <= N.WEIGHTS_TOL
                   for b in (4, 2)), (c["params"], f["weights_mb"])
    if f.get("pretrain_dataset"):
        assert N.pretrain_domain(N.pretrain_key(f["pretrain_dataset"])) is not None


@pytest.mark.slow  # builds transformers configs on the meta device
def test_weight_file_size_picks_one_architecture_or_none():
    spec, p, _ = N._spec_by_weights("vit", 343, 224)  # ViT-B/16 + a small head, float32
    assert (spec.variant, spec.patch) == ("base", 16) and abs(p - 85.75e6) < 1
    spec, _, _ = N._spec_by_weights("vit", 86.7, 224)  # ViT-S/16 (= DeiT-S), float32
    assert (spec.variant, spec.patch) == ("small", 16)
    spec, _, why = N._spec_by_weights("vit", 350, 224)  # fits B/16 and B/32: not sized
    assert spec is None and "2 size variants" in why


def test_config_fields_pick_the_variant_with_exactly_those_dimensions():
    cfg = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
           "patch_size": 16, "image_size": 224}
    spec, _ = N._spec_by_config("vit", cfg)
    assert (spec.variant, spec.patch, spec.image_size) == ("base", 16, 224)
    spec, _ = N._spec_by_config("vit", {**cfg, "hidden_size": 384, "num_attention_heads": 6,
                                        "intermediate_size": 1536, "patch_size": 32, "image_size": 384})
    assert (spec.variant, spec.patch, spec.image_size) == ("small", 32, 384)
    spec, why = N._spec_by_config("vit", {**cfg, "hidden_size": 32, "num_hidden_layers": 5,
                                          "num_attention_heads": 4, "intermediate_size": 37})
    assert spec is None and "no size variant" in why  # a tiny test config is not rounded to a size
    spec, why = N._spec_by_config("vit", {**cfg, "intermediate_size": 2048})  # not a standard MLP
    assert spec is None
    spec, why = N._spec_by_config("convnext", cfg)
    assert spec is None and "ViT-like" in why


def test_text_variant_implies_the_known_vocabularies():
    """Independent check of the params -> variant rule: the implied vocabulary of public
    checkpoints is the vocabulary their tokenizers are known to have."""
    spec, _ = N._text_variant_by_params("bert", 109483778)  # bert-base-uncased + 2-class head
    assert (spec.variant, abs(spec.vocab - 30522) < 5) == ("base", True)
    spec, _ = N._text_variant_by_params("xlm-roberta", 278044417)
    assert (spec.variant, abs(spec.vocab - 250002) < 5) == ("base", True)
    spec, why = N._text_variant_by_params("bert", 1e5)
    assert spec is None and "no size variant" in why


def test_malformed_facts_are_refused(tmp_path):
    import json

    p = tmp_path / "facts.json"
    for bad, msg in (({"name": "a/b", "url": "https://x", "evidence": "e"}, "base checkpoint"),
                     ({"name": "a/b", "base": "google/vit-base-patch16-224", "evidence": "e"}, "url"),
                     ({"name": "a/b", "base": "x", "url": "https://x", "evidence": "e", "oops": 1}, "unknown"),
                     ({"name": "a/b", "family": "vit", "url": "https://x", "evidence": "e"}, "weight-file"),
                     ({"name": "a/b", "family": "vit", "config": {"hidden_size": 768}, "url": "https://x",
                       "evidence": "e"}, "config must give")):
        p.write_text(json.dumps({"models": [bad]}))
        with pytest.raises(ValueError, match=msg):
            N.load_model_facts.__wrapped__(p)


@pytest.mark.slow  # builds transformers configs on the meta device
def test_enrich_uses_the_facts_table_on_a_real_store(tmp_path):
    s = HistoryStore(f"sqlite:///{tmp_path / 'f.db'}")
    names = {"IMSyPP/hate_speech_it": "text", "osanseviero/hot_dog_or_sandwich": "image",
             "warwickai/fin-perceiver": "text", "someone/unlisted_model": "image"}
    s.commit(models=[{"name": n, "modality": m, **({"input_size": 224} if m == "image" else {})}
                     for n, m in names.items()],
             jobs=[{"model": n, "dataset": "cifar100", "value": 0.5, "source": "shift"} for n in names])
    rep = E.enrich(s, timm_dir=tmp_path / "no-timm-here")
    m = s.models_frame().set_index("name")
    it = m.loc["IMSyPP/hate_speech_it"]
    assert it["params"] == 184348420 and it["family"] == "bert" and it["input_size"] == 512
    assert it["gmacs"] > 10 and it["depth"] == 12 and it["domain"] == "general-text"
    assert it["extra"]["enrich_params"].startswith("model facts table (https://github.com/zLizy/transfergraph")
    hd = m.loc["osanseviero/hot_dog_or_sandwich"]
    assert hd["family"] == "vit" and hd["gmacs"] > 10 and hd["depth"] == 12
    assert (hd["pretrain_dataset"], hd["domain"]) == ("hfpics", "web")
    fp = m.loc["warwickai/fin-perceiver"]  # params and family from the table; GMACs stay unknown
    assert fp["params"] == 206099971 and fp["family"] == "perceiver" and _nan(fp["gmacs"])
    assert _nan(fp["domain"])  # the vision Perceiver's ImageNet default is not a text model's data
    why = rep.sources["shift"].unknown["gmacs"]
    assert any("perceiver: architecture not modelled" in w for w in why)
    assert any("no architecture hint" in w for w in why)  # the unlisted model keeps its reason
    assert E.enrich(s, timm_dir=tmp_path / "no-timm-here").models_updated == 0
    s.dispose()
