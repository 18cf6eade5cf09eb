"""Model names and the tables behind them: what a model's name (and its stored facts) say about
its architecture and pretraining, without weights or network.

* pretraining data: :data:`PRETRAIN_TABLE` (key -> description, domain), :func:`pretrain_key`
  (a pretraining name -> key), :func:`timm_tag_pretrain`, :data:`FAMILY_PRETRAIN`;
* published tables: the PARC architectures (torchvision docs) and VAN (Guo et al. 2022);
* transformer variants: size tables per family, :class:`Spec` and :func:`count` (a transformers
  config built on the meta device, counted with ``FlopCounterMode``);
* name parsing: :func:`parse_hf_name` (Hugging Face names), :func:`timm_name`;
* the model facts table ``history/data/model_facts.json`` (:func:`load_model_facts`,
  :func:`spec_from_fact`).

:func:`history.enrich.enrich` uses them to fill the models' meta-features of a store.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from history.util import is_missing

from .datasets_registry import lookup

TEXT_TOKENS = 128  # sequence length at which text-model GMACs are counted

# --------------------------------------------------------------------------- pretraining data
#: pretraining dataset key -> (description, domain). The stated table behind ``domain``.
PRETRAIN_TABLE = {
    "imagenet-21k": ("ImageNet-21k/22k: ~14M photos, ~21k classes", "objects"),
    "imagenet-12k": ("timm's 11,821-class subset of ImageNet-22k", "objects"),
    "merged-38m": ("Merged-38M / 30M: ImageNet-22k + Places + COCO + others (MIM pretraining)", "objects"),
    "laion": ("LAION-400M / 2B: web image-text pairs", "web"),
    "openai-wit": ("OpenAI CLIP's 400M web image-text pairs", "web"),
    "web-image-text": ("DataComp / DFN / MetaCLIP / CC12M: web image-text pairs", "web"),
    "webli": ("Google WebLI: web images with alt-text", "web"),
    "jft": ("Google JFT-300M / 3B: web images, weak labels", "web"),
    "instagram": ("Instagram hashtag images (IG-1B / 3.5B, SEER, SWAG)", "web"),
    "yfcc100m": ("YFCC100M: Flickr photos", "web"),
    "coco": ("MS-COCO detection / segmentation / keypoints", "objects"),
    "lvis": ("LVIS: COCO images, 1,203 categories", "objects"),
    "cityscapes": ("Cityscapes street scenes", "driving"),
    "places": ("Places205 / Places365 scene photos", "scenes"),
    "hfpics": ("HuggingPics: a few classes of web images found by image search", "web"),
    "beans": ("bean-leaf photos labelled by disease", "agriculture"),
    "cats_vs_dogs": ("photos of cats and dogs", "objects"),
    "food101": ("Food-101: photos of 101 dishes", "food"),
    "snacks": ("photos of 20 snack foods", "food"),
    "faces": ("face photos (masks, age, emotion)", "faces"),
    "chest-xray": ("chest X-ray images", "medical"),
    "pokemon": ("Pokemon drawings", "illustrations"),
    "iit-cdip": ("IIT-CDIP / RVL-CDIP scanned documents", "documents"),
    "bookcorpus-wikipedia": ("BookCorpus + English Wikipedia (BERT's corpus)", "general-text"),
    "roberta-corpus": ("BookCorpus, Wikipedia, CC-News, OpenWebText, Stories (RoBERTa's 160GB)", "web-text"),
    "c4": ("C4: cleaned Common Crawl", "web-text"),
    "cc100": ("CC-100: multilingual Common Crawl (XLM-R)", "web-text"),
    "tweets": ("English tweets (BERTweet, Twitter-RoBERTa)", "social"),
    "pubmed": ("PubMed abstracts / PMC articles", "biomedical"),
    "patents": ("patent texts", "patents"),
}

#: (regex on a lower-cased pretraining name, key); the first match wins, so broader data first.
_PRETRAIN_PATTERNS = [
    (r"laion", "laion"), (r"openai|clip_?openai", "openai-wit"),
    (r"datacomp|dfn|metaclip|merged2b|cc12m|cc3m", "web-image-text"), (r"webli", "webli"),
    (r"jft", "jft"), (r"(^|[_-])(ig1b|ig3b|ig|swsl|wsl|seer|swag)([_-]|$)|instagram", "instagram"),
    (r"yfcc", "yfcc100m"), (r"m38m|m30m", "merged-38m"),
    (r"cityscapes", "cityscapes"), (r"lvis", "lvis"), (r"voc", "voc2007"),
    (r"rcnn|retinanet|panoptic|(^|[_-])coco", "coco"), (r"places", "places"),
    (r"in21k|in22k|pt22k|imagenet-?2[12]k|imagenet_?22k|imagenet-21k|(^|[-_])22k", "imagenet-21k"),
    (r"in12k", "imagenet-12k"),
    (r"in1k|imagenet|fcmae|ssld|ilsvrc|(^|[-_])1k", "imagenet"),
    (r"hfpics|huggingpics", "hfpics"), (r"^beans$", "beans"), (r"cats_vs_dogs", "cats_vs_dogs"),
    (r"food-?101", "food101"), (r"snacks", "snacks"),
    (r"facemask|(^|/)mask$|age-prediction|emotional", "faces"), (r"chest_xray", "chest-xray"),
    (r"pokemon", "pokemon"), (r"rvl-?cdip|iit-cdip", "iit-cdip"),
]

#: family -> pretraining data of its reference checkpoints (used only when nothing else tells)
FAMILY_PRETRAIN = {
    "vit": "imagenet-21k", "deit": "imagenet", "beit": "imagenet-21k", "data2vec-vision": "imagenet",
    "dit": "iit-cdip", "swin": "imagenet", "convnext": "imagenet", "segformer": "imagenet",
    "van": "imagenet", "perceiver": "imagenet", "resnet": "imagenet", "convit": "imagenet",
    "bert": "bookcorpus-wikipedia", "distilbert": "bookcorpus-wikipedia", "albert": "bookcorpus-wikipedia",
    "electra": "bookcorpus-wikipedia", "minilm": "bookcorpus-wikipedia", "roberta": "roberta-corpus",
    "data2vec-text": "roberta-corpus", "xlm-roberta": "cc100", "bertweet": "tweets", "fnet": "c4",
}


def pretrain_key(text) -> str | None:
    """Normalize a pretraining name (TransferGraph dataset, PARC source, timm tag) to a table key
    (or a dataset-registry name for a target dataset used as a source); None if unknown."""
    if is_missing(text):
        return None
    s = str(text).strip().lower()
    if not s:
        return None

    ent = lookup(s)
    if ent is not None:
        return ent.name
    for pat, key in _PRETRAIN_PATTERNS:
        if re.search(pat, s):
            return key
    return None


def pretrain_domain(key: str | None) -> str | None:
    if key is None:
        return None
    if key in PRETRAIN_TABLE:
        return PRETRAIN_TABLE[key][1]

    ent = lookup(key)
    return None if ent is None else ent.domain


def timm_tag_pretrain(model_name: str) -> str | None:
    """``vit_base_patch16_224.augreg_in21k_ft_in1k`` -> ``imagenet-21k`` (the data before ``_ft_``)."""
    if "." not in str(model_name):
        return None
    tag = str(model_name).split(".", 1)[1]
    return pretrain_key(tag.split("_ft_", 1)[0]) or pretrain_key(tag)


# --------------------------------------------------------------------------- published tables
#: torchvision model docs (weights IMAGENET1K_V1): params, "GFLOPS" (multiply-adds) at 224.
PARC_ARCH = {
    "alexnet": dict(params=61.1e6, gmacs=0.71, input_size=224, feature_dim=4096, depth=8),
    "googlenet": dict(params=6.6e6, gmacs=1.5, input_size=224, feature_dim=1024, depth=22),
    "resnet18": dict(params=11.7e6, gmacs=1.81, input_size=224, feature_dim=512, depth=18),
    "resnet50": dict(params=25.6e6, gmacs=4.09, input_size=224, feature_dim=2048, depth=50),
    "resnet101": dict(params=44.5e6, gmacs=7.8, input_size=224, feature_dim=2048, depth=101),
}
PARC_REF = "torchvision model docs (IMAGENET1K_V1 weights table); depth as used by PARC"
#: Guo et al. 2022, Visual Attention Network, Table 1 (VAN-B0..B3 = tiny/small/base/large).
VAN = {
    "tiny": dict(params=4.1e6, gmacs=0.9, feature_dim=256, depth=3 + 3 + 5 + 2),
    "small": dict(params=13.9e6, gmacs=2.5, feature_dim=512, depth=2 + 2 + 4 + 2),
    "base": dict(params=26.6e6, gmacs=5.0, feature_dim=512, depth=3 + 3 + 12 + 3),
    "large": dict(params=44.8e6, gmacs=9.0, feature_dim=512, depth=3 + 5 + 27 + 3),
}
VAN_REF = "Guo et al. 2022, Visual Attention Network, Table 1"

# --------------------------------------------------------------------------- transformers variants
_VIT = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
        "huge": (1280, 32, 16)}
_SWIN = {"tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24]), "small": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
         "base": (128, [2, 2, 18, 2], [4, 8, 16, 32]), "large": (192, [2, 2, 18, 2], [6, 12, 24, 48])}
_CONVNEXT = {"tiny": ([96, 192, 384, 768], [3, 3, 9, 3]), "small": ([96, 192, 384, 768], [3, 3, 27, 3]),
             "base": ([128, 256, 512, 1024], [3, 3, 27, 3]), "large": ([192, 384, 768, 1536], [3, 3, 27, 3]),
             "xlarge": ([256, 512, 1024, 2048], [3, 3, 27, 3])}
_MIT = {"b0": ([32, 64, 160, 256], [2, 2, 2, 2]), "b1": ([64, 128, 320, 512], [2, 2, 2, 2]),
        "b2": ([64, 128, 320, 512], [3, 4, 6, 3]), "b3": ([64, 128, 320, 512], [3, 4, 18, 3]),
        "b4": ([64, 128, 320, 512], [3, 8, 27, 3]), "b5": ([64, 128, 320, 512], [3, 6, 40, 3])}
_BERT = {"tiny": (128, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "medium": (512, 8, 8),
         "base": (768, 12, 12), "large": (1024, 24, 16)}
_ALBERT = {"base": (768, 12, 12, 128), "large": (1024, 24, 16, 128), "xlarge": (2048, 24, 16, 128)}
_ELECTRA = {"small": (256, 12, 4, 128), "base": (768, 12, 12, 768), "large": (1024, 24, 16, 1024)}
DEFAULT_VARIANT = {"vit": "base", "deit": "base", "beit": "base", "data2vec-vision": "base", "dit": "base",
                   "swin": "tiny", "convnext": "tiny", "bert": "base", "distilbert": "base", "roberta": "base",
                   "xlm-roberta": "base", "albert": "base", "electra": "base", "bertweet": "base",
                   "data2vec-text": "base", "fnet": "base", "minilm": "base"}
IMAGE_FAMILIES = {"vit", "deit", "beit", "data2vec-vision", "dit", "swin", "convnext", "segformer", "van",
                  "perceiver", "resnet", "convit"}


#: stored ``family`` values (TransferGraph's ``model_type``) that name a modelled architecture
_STORED_FAMILIES = {"data2vec-vision", "vit", "deit", "beit", "swin", "convnext", "van", "resnet", "segformer",
                    "perceiver", "bert", "distilbert", "roberta", "albert", "electra", "xlm-roberta"}


@dataclass(frozen=True)
class Spec:
    """What the name (and stored facts) say about a Hugging Face model's architecture."""

    family: str
    variant: str | None
    image_size: int | None = None
    patch: int | None = None
    window: int | None = None
    distilled: bool = False
    vocab: int | None = None
    layers: int | None = None
    hidden: int | None = None
    how: str = "name"  # how the variant was chosen: name | params | default


def _config(spec: Spec):
    """A transformers config for ``spec`` (no weights), or raise KeyError if not modelled."""
    from transformers import AutoConfig

    f, v = spec.family, spec.variant or ""  # no variant: the tables below raise KeyError
    img = spec.image_size or 224
    if f in ("vit", "deit"):
        h, n, a = _VIT[v]
        mt = "deit" if (f == "deit" and spec.distilled) else "vit"
        return AutoConfig.for_model(mt, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, image_size=img, patch_size=spec.patch or 16)
    if f in ("beit", "data2vec-vision", "dit"):
        h, n, a = _VIT[v]
        mt = "data2vec-vision" if f == "data2vec-vision" else "beit"
        return AutoConfig.for_model(mt, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, image_size=img, patch_size=spec.patch or 16)
    if f == "swin":
        e, d, hd = _SWIN[v]
        return AutoConfig.for_model("swin", embed_dim=e, depths=d, num_heads=hd, image_size=img,
                                    patch_size=spec.patch or 4, window_size=spec.window or 7)
    if f == "convnext":
        hs, d = _CONVNEXT[v]
        return AutoConfig.for_model("convnext", hidden_sizes=hs, depths=d, image_size=img)
    if f == "segformer":
        hs, d = _MIT[v]
        return AutoConfig.for_model("segformer", hidden_sizes=hs, depths=d)
    if f in ("bert", "minilm"):
        h, n, a = _BERT.get(v, _BERT["base"])
        h, n = spec.hidden or h, spec.layers or n
        a = max(1, h // 64) if spec.hidden else a
        return AutoConfig.for_model("bert", hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, vocab_size=spec.vocab or 30522)
    if f == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=spec.vocab or 30522, n_layers=spec.layers or 6)
    if f in ("roberta", "bertweet", "data2vec-text", "xlm-roberta"):
        h, n, a = _BERT[v if v in ("base", "large") else "base"]
        h, n = spec.hidden or h, spec.layers or n
        a = max(1, h // 64) if spec.hidden else a
        vocab = spec.vocab or {"bertweet": 64001, "xlm-roberta": 250002}.get(f, 50265)
        maxpos = 130 if f == "bertweet" else 514
        mt = {"data2vec-text": "data2vec-text", "xlm-roberta": "xlm-roberta"}.get(f, "roberta")
        return AutoConfig.for_model(mt, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, vocab_size=vocab, max_position_embeddings=maxpos)
    if f == "albert":
        h, n, a, e = _ALBERT[v]
        return AutoConfig.for_model("albert", hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, embedding_size=e)
    if f == "electra":
        h, n, a, e = _ELECTRA[v]
        return AutoConfig.for_model("electra", hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    intermediate_size=4 * h, embedding_size=e, vocab_size=spec.vocab or 30522)
    if f == "fnet":
        return AutoConfig.for_model("fnet")
    raise KeyError(f)


@lru_cache(maxsize=256)
def count(spec: Spec) -> dict:
    """Build ``spec``'s backbone on the meta device and count it: params, GMACs, depth, feature dim.

    Raises KeyError when the family / variant is not modelled here."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - both are test dependencies
        raise ImportError(f"counting a model's GMACs needs torch and transformers ({exc}); "
                          "install them with pip install 'finetune-recommender[text]'") from None
    cfg = _config(spec)
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    if spec.family in IMAGE_FAMILIES:
        img = spec.image_size or 224
        x = {"pixel_values": torch.zeros(1, 3, img, img, device="meta")}
    else:
        x = {"input_ids": torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device="meta")}
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = model(**x)
    pooled = getattr(out, "pooler_output", None)
    feat = (pooled if pooled is not None else out.last_hidden_state).shape[-1]
    if spec.family == "segformer":
        feat = cfg.hidden_sizes[-1]
    if getattr(cfg, "depths", None):  # staged backbones: blocks summed over the stages
        depth: int | None = int(sum(cfg.depths))
    else:
        depth = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", None)
    return {"params": float(params), "gmacs": fc.get_total_flops() / 2e9, "depth": int(depth) if depth else None,
            "feature_dim": int(feat)}


# --------------------------------------------------------------------------- name parsing
_SIZE_RE = r"(?<![a-z])(tiny|mini|small|medium|base|large|huge|xlarge)(?![a-z])"


def _image_family(n: str) -> str | None:
    for pat, fam in ((r"convnext", "convnext"), (r"swin", "swin"), (r"deit", "deit"),
                     (r"data2vec-vision", "data2vec-vision"), (r"(^|/)dit-", "dit"), (r"beit", "beit"),
                     (r"(^|/)mit-b\d", "segformer"), (r"perceiver", "perceiver"), (r"(^|/)van-", "van"),
                     (r"(^|/)resnet-\d+", "resnet"), (r"(?<!con)vit", "vit")):
        if re.search(pat, n):
            return fam
    return None


def _text_family(n: str) -> str | None:
    for pat, fam in ((r"bertweet", "bertweet"), (r"xlm-?r|mminilm", "xlm-roberta"),
                     (r"distilroberta", "roberta"), (r"data2vec", "data2vec-text"),
                     (r"twitter-roberta|roberta", "roberta"), (r"distilbert", "distilbert"),
                     (r"albert", "albert"), (r"electra|electricidad", "electra"), (r"minilm", "minilm"),
                     (r"fnet", "fnet"), (r"bert", "bert")):
        if re.search(pat, n):
            return fam
    return None


def parse_hf_name(name: str, modality: str | None, family: str | None = None,
                  input_size=None, params=None) -> tuple[Spec | None, str]:
    """A :class:`Spec` for a Hugging Face model name plus stored facts, or (None, why not)."""
    n = str(name).lower()
    fam = (family or "").lower() or None
    if fam not in _STORED_FAMILIES:  # a stored family we do not model is ignored, the name decides
        fam = None
    guess = _image_family(n) if modality != "text" else _text_family(n)
    if fam is None:
        fam = guess
    elif fam == "vit" and guess == "deit":  # facebook/deit-* checkpoints are stored as model_type vit
        fam = "deit"
    elif fam == "beit" and guess == "dit":
        fam = "dit"
    if fam is None:
        return None, "the name carries no architecture hint and no source gives one"
    spec_layers = 6 if (modality == "text" and "distilroberta" in n) else None
    m = re.search(r"patch(\d+)", n)
    patch = int(m.group(1)) if m else None
    m = re.search(r"window(\d+)", n)
    window = int(m.group(1)) if m else None
    m = re.search(r"(?<![0-9])(224|256|288|384|448|512)(?![0-9])", n)
    img = int(input_size) if input_size and not pd.isna(input_size) else (int(m.group(1)) if m else None)
    if fam in IMAGE_FAMILIES and img is None:
        img = 224
    vocab = hidden = None
    if fam in ("bert", "distilbert") and "multilingual" in n:
        vocab = 119547
    elif fam == "bert" and re.search(r"(?<!un)cased", n):
        vocab = 28996
    if fam == "minilm" or (fam == "xlm-roberta" and "minilm" in n):
        m = re.search(r"l-?(\d+)", n.split("minilm", 1)[1])
        spec_layers = int(m.group(1)) if m else 12
        m = re.search(r"h(\d+)", n.split("minilm", 1)[1])
        hidden = int(m.group(1)) if m else 384
    if fam == "segformer":
        m = re.search(r"mit-(b\d)", n)
        variants = [m.group(1)] if m else []
    else:
        variants = re.findall(_SIZE_RE, n)
    if fam == "van":
        v = variants[0] if variants else None
        if v not in VAN:
            return None, "VAN model of unknown size"
        return Spec("van", v, img, how="name"), ""
    base: dict[str, Any] = dict(family=fam, image_size=img, patch=patch, window=window, distilled="distilled" in n,
                                vocab=vocab, layers=spec_layers, hidden=hidden)
    if fam in ("perceiver", "resnet", "convit"):
        return Spec(variant=None, **base), ""
    if variants:
        return Spec(variant=variants[0], **base, how="name"), ""
    if params is not None and not pd.isna(params) and fam in _CANDIDATES:
        best, err = None, None
        for v in _CANDIDATES[fam]:
            try:
                p = count(Spec(variant=v, **base))["params"]
            except (KeyError, ValueError):
                continue
            e = abs(p - float(params)) / float(params)
            if err is None or e < err:
                best, err = v, e
        if best is not None and err is not None and err <= 0.10:
            return Spec(variant=best, **base, how="params"), ""
        return None, f"{fam}: no size variant within 10% of the stored {float(params) / 1e6:.2f}M params"
    if fam in DEFAULT_VARIANT and fam in ("bert", "distilbert", "roberta", "xlm-roberta", "bertweet",
                                          "data2vec-text", "fnet", "minilm"):
        # text checkpoints without a size word are the family's base model by convention
        return Spec(variant=DEFAULT_VARIANT[fam], **base, how="default"), ""
    return None, f"{fam}: the name gives no size (tiny/small/base/large) and no source gives params"


_CANDIDATES = {"vit": list(_VIT), "deit": ["tiny", "small", "base"], "beit": ["base", "large"],
               "data2vec-vision": ["base", "large"], "dit": ["base", "large"], "swin": list(_SWIN),
               "convnext": list(_CONVNEXT), "bert": ["base", "large"], "roberta": ["base", "large"],
               "albert": list(_ALBERT), "electra": list(_ELECTRA)}


def timm_name(spec: Spec, name: str) -> str | None:
    """The timm architecture name of a Hugging Face architecture, when one exists."""
    f, v, img = spec.family, spec.variant, spec.image_size or 224
    if f == "vit":
        return f"vit_{v}_patch{spec.patch or 16}_{img}"
    if f == "deit":
        return f"deit_{v}_{'distilled_' if spec.distilled else ''}patch{spec.patch or 16}_{img}"
    if f == "beit":
        return f"beit_{v}_patch{spec.patch or 16}_{img}"
    if f == "swin":
        return f"swin_{v}_patch{spec.patch or 4}_window{spec.window or 7}_{img}"
    if f == "convnext":
        return f"convnext_{v}"
    if f == "resnet":
        m = re.search(r"resnet-(\d+)", name.lower())
        return f"resnet{m.group(1)}" if m else None
    return None


# --------------------------------------------------------------------------- model facts table
FACTS_FILE = Path(__file__).with_name("data") / "model_facts.json"
#: families whose checkpoints read text of at most this many tokens (their position table)
TEXT_MAX_TOKENS = {"bert": 512, "distilbert": 512, "roberta": 512, "xlm-roberta": 512, "electra": 512,
                   "albert": 512, "deberta-v2": 512, "perceiver": 2048}
_FACT_KEYS = {"name", "base", "family", "params", "weights_mb", "config", "pretrain_dataset", "source", "url",
              "evidence"}
#: config.json fields a ``config`` entry gives for the ViT-like families (width, depth, heads, patch, image)
CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
               "image_size")


@lru_cache(maxsize=4)
def load_model_facts(path=None) -> dict:
    """``history/data/model_facts.json`` as {model name: entry}; every entry names its source.

    An entry gives either ``base`` (the public checkpoint the model fine-tunes, whose name the
    parser resolves: ``google/vit-base-patch16-224-in21k``) or ``family`` and ``params`` (the
    model's own config: ``model_type`` and parameter count), optionally ``pretrain_dataset``;
    ``weights_mb`` (the size of the checkpoint's weight file as its Hub page shows it) stands in
    for a parameter count: see :func:`_spec_by_weights`; ``config`` (the architecture fields of
    the checkpoint's own ``config.json``, :data:`CONFIG_KEYS`) names the size variant whose
    dimensions it equals: see :func:`_spec_by_config`. ``url`` is where the fact is published,
    ``evidence`` what it says. Raises ValueError on a
    malformed entry (the table ships with the package; its tests check every entry)."""
    import json

    p = Path(path) if path is not None else FACTS_FILE
    if not p.exists():
        return {}
    doc = json.loads(p.read_text())
    sources = doc.get("sources", {})
    out = {}
    for i, e in enumerate(doc.get("models", [])):
        where = f"{p.name}: models[{i}] ({e.get('name', '?')})"
        bad = set(e) - _FACT_KEYS
        if bad:
            raise ValueError(f"{where}: unknown keys {sorted(bad)}")
        if not e.get("name") or not (e.get("url") or e.get("source") in sources):
            raise ValueError(f"{where}: needs a name and a url or a known source")
        if not e.get("evidence") and e.get("source") not in sources:
            raise ValueError(f"{where}: needs the evidence the source gives")
        if not e.get("base") and not (e.get("family") and (e.get("params") or e.get("weights_mb")
                                                          or e.get("config"))):
            raise ValueError(f"{where}: needs a base checkpoint, or a family and a parameter count, "
                             "weight-file size or config")
        if e.get("config") is not None and (not isinstance(e["config"], dict)
                                            or set(e["config"]) != set(CONFIG_KEYS)):
            raise ValueError(f"{where}: config must give exactly {', '.join(CONFIG_KEYS)}")
        if e["name"] in out:
            raise ValueError(f"{where}: listed twice")
        src = sources.get(e.get("source"), {})
        out[e["name"]] = {**e, "url": e.get("url") or src.get("url"),
                          "evidence": "; ".join(x for x in (e.get("evidence"), src.get("evidence")) if x)}
    return out


def _text_variant_by_params(family: str, params: float, **spec_kw) -> tuple[Spec | None, str]:
    """The size variant of a text family whose checkpoint has ``params`` parameters, with the
    vocabulary the count implies (a checkpoint's vocabulary is its own: Italian, Arabic,
    multilingual). Each candidate size is built with two vocabularies to get its non-embedding
    parameters and its embedding width; the variant is the one candidate whose implied vocabulary
    lies between 1,000 and 300,000 tokens. None (with the reason) when none or several fit."""
    cands = _CANDIDATES.get(family) or ([DEFAULT_VARIANT[family]] if family in DEFAULT_VARIANT else [])
    fits = []
    for v in cands:
        try:
            a = count(Spec(family, v, vocab=1000, how="facts table", **spec_kw))["params"]
            b = count(Spec(family, v, vocab=2000, how="facts table", **spec_kw))["params"]
        except (KeyError, ValueError, TypeError):
            continue
        width = (b - a) / 1000
        vocab = 1000 + (float(params) - a) / width if width > 0 else -1
        if 1_000 <= vocab <= 300_000:
            fits.append((v, int(round(vocab))))
    if len(fits) != 1:
        why = "no" if not fits else "more than one"
        return None, (f"{family}: {why} size variant fits {float(params) / 1e6:.1f}M params "
                      "with a vocabulary of 1k-300k tokens")
    v, vocab = fits[0]
    return Spec(family, v, vocab=vocab, how="facts table (params)", **spec_kw), ""


WEIGHTS_TOL = 0.02  # a weight file's size (3 significant digits, head included) vs a counted backbone


def _spec_by_weights(family: str, mb: float, input_size=None) -> tuple[Spec | None, float | None, str]:
    """(spec, params, why) for a checkpoint of ``family`` whose weight file has ``mb`` MB.

    Every size variant (and, for ViT-like families, patch 16 and 32) is built and counted; a
    candidate fits when its parameter count is within 2% of the file's at 4 bytes (float32) or
    2 bytes (float16) per parameter. The spec is returned only when exactly one candidate fits:
    ViT-B/16 (86.4M) and ViT-B/32 (88.2M) are told apart, a file that fits two sizes is not sized."""
    img = int(input_size) if input_size and not pd.isna(input_size) else 224
    patches = (16, 32) if family in ("vit", "deit", "beit") else (None,)
    fits = []
    for v in _CANDIDATES.get(family, []):
        for patch in patches:
            spec = Spec(family, v, image_size=img, patch=patch, how=f"facts table (weight file {mb:g} MB)")
            try:
                n = count(spec)["params"]
            except (KeyError, ValueError, TypeError, RuntimeError):
                continue
            for nbytes in (4, 2):
                p = float(mb) * 1e6 / nbytes
                if abs(n - p) / p <= WEIGHTS_TOL:
                    fits.append((spec, p))
    if len(fits) != 1:
        what = "no" if not fits else f"{len(fits)}"
        return None, None, (f"{family}: {what} size variants fit a {mb:g} MB weight file "
                            f"(within {WEIGHTS_TOL:.0%} at 4 or 2 bytes per parameter)")
    return fits[0][0], fits[0][1], ""


def _spec_by_config(family: str, cfg: dict) -> tuple[Spec | None, str]:
    """The size variant of a ViT-like ``family`` whose dimensions equal the checkpoint's
    ``config.json`` (width, depth, heads and a 4x MLP), at its patch and image size; None (with
    the reason) when no variant has exactly those dimensions: nothing is rounded to a size."""
    if family not in ("vit", "deit", "beit", "data2vec-vision", "dit"):
        return None, f"{family}: sizing from config.json fields is modelled for ViT-like families only"
    dims = (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"])
    for v, d in _VIT.items():
        if family == "deit" and v not in _CANDIDATES["deit"]:
            continue
        if d == tuple(dims) and cfg["intermediate_size"] == 4 * d[0]:
            return Spec(family, v, image_size=int(cfg["image_size"]), patch=int(cfg["patch_size"]),
                        how="facts table (config.json)"), ""
    return None, (f"{family}: no size variant has the config's dimensions "
                  f"(hidden {dims[0]}, {dims[1]} layers, {dims[2]} heads)")


def spec_from_fact(fact: dict, modality: str | None, input_size=None) -> tuple[Spec | None, str]:
    """A :class:`Spec` for a model from its facts-table entry, or (None, why not)."""
    if fact.get("base"):
        spec, why = parse_hf_name(fact["base"], modality, None, input_size)
        if spec is None:
            return None, f"base checkpoint {fact['base']}: {why}"
        return Spec(**{**spec.__dict__, "how": f"facts table (base {fact['base']})"}), ""
    fam = str(fact["family"]).lower()
    if fact.get("config"):
        return _spec_by_config(fam, fact["config"])
    if fact.get("weights_mb") and not fact.get("params"):
        spec, _, why = _spec_by_weights(fam, fact["weights_mb"], input_size)
        return spec, why
    if modality == "text":
        if fam in ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert"):
            return _text_variant_by_params(fam, fact["params"])
    elif fam in _STORED_FAMILIES:
        return parse_hf_name(fact["name"], modality, fam, input_size, fact["params"])
    return None, f"{fam}: architecture not modelled here (the facts table gives family and params)"
