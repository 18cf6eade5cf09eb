"""A tiny offline model zoo and tasks: ``recommender demo --zoo``, end-to-end tests, runner benchmarks.

No pretrained weights can be downloaded here, so the zoo is made on the spot: small CNNs
(16x16 grayscale input) pre-trained for about a second each on different *source tasks*
built from scikit-learn's bundled digits and from generated images (shapes, stripes,
textures), saved as TorchScript files with their input metadata embedded. *Target tasks*
of the same families (other samples, other variants) are written as image folders, and a
small generated text task as a CSV for the offline sentence model.

Everything is seeded: the same call builds the same zoo and the same tasks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from history.store import HistoryStore
from recommender.finetune import load_task, run_trial

SIZE = 16
META = {"input_size": SIZE, "channels": 1, "mean": [0.5], "std": [0.5], "modality": "image"}


# ---------------------------------------------------------------------------- images
def _digits(rng, n, classes):
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(np.isin(d.target, classes))
    idx = rng.choice(keep, size=min(n, len(keep)), replace=False)
    x = np.kron(d.images[idx] / 16.0, np.ones((2, 2)))
    x = x + rng.normal(0, 0.05, x.shape)
    return np.clip(x, 0, 1), d.target[idx]


def _shapes(rng, n, scale=(3, 6)):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    xs, ys = np.empty((n, SIZE, SIZE)), rng.integers(0, 4, n)
    for i, c in enumerate(ys):
        r = rng.uniform(*scale)
        cx, cy = rng.uniform(r, SIZE - r, 2)
        if c == 0:
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif c == 1:
            m = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
        elif c == 2:
            m = (yy - cy <= r) & (yy - cy >= -r) & (abs(xx - cx) <= (yy - cy + r) / 2)
        else:
            m = ((abs(xx - cx) <= 1) & (abs(yy - cy) <= r)) | ((abs(yy - cy) <= 1) & (abs(xx - cx) <= r))
        xs[i] = m * rng.uniform(0.6, 1.0) + rng.normal(0, 0.1, (SIZE, SIZE))
    return np.clip(xs, 0, 1), ys


def _stripes(rng, n, freq=(1.5, 4.0)):
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    angles = [0, np.pi / 2, np.pi / 4, 3 * np.pi / 4]
    xs, ys = np.empty((n, SIZE, SIZE)), rng.integers(0, 4, n)
    for i, c in enumerate(ys):
        f, ph = rng.uniform(*freq), rng.uniform(0, 2 * np.pi)
        a = angles[c] + rng.normal(0, 0.1)
        xs[i] = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + ph)
    return np.clip(xs + rng.normal(0, 0.1, xs.shape), 0, 1), ys


def _textures(rng, n, contrast=(0.5, 1.0)):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    xs, ys = np.empty((n, SIZE, SIZE)), rng.integers(0, 4, n)
    for i, c in enumerate(ys):
        k = rng.uniform(*contrast)
        if c == 0:  # checkerboard
            s = rng.integers(2, 5)
            t = ((xx // s + yy // s) % 2).astype(float)
        elif c == 1:  # dots
            s = rng.integers(3, 6)
            t = ((xx % s == 0) & (yy % s == 0)).astype(float)
        elif c == 2:  # smooth blobs
            t = rng.normal(size=(4, 4))
            t = np.kron(t, np.ones((SIZE // 4, SIZE // 4)))
            t = (t - t.min()) / (np.ptp(t) + 1e-9)
        else:  # gradient
            a = rng.uniform(0, 2 * np.pi)
            t = (xx * np.cos(a) + yy * np.sin(a))
            t = (t - t.min()) / (np.ptp(t) + 1e-9)
        xs[i] = 0.5 + k * (t - 0.5)
    return np.clip(xs + rng.normal(0, 0.08, xs.shape), 0, 1), ys


def make_images(task: str, n: int, seed: int):
    """(images [n, 16, 16] in [0, 1], labels) of a named task."""
    rng = np.random.default_rng(seed)
    fam, _, variant = task.partition("-")
    if fam == "digits":
        classes = {"lo": range(5), "hi": range(5, 10)}.get(variant, range(10))
        return _digits(rng, n, list(classes))
    if fam == "shapes":
        return _shapes(rng, n, (2, 4) if variant == "small" else (3, 6))
    if fam == "stripes":
        return _stripes(rng, n, (4.0, 6.0) if variant == "fine" else (1.5, 4.0))
    if fam == "textures":
        return _textures(rng, n, (0.2, 0.5) if variant == "faint" else (0.5, 1.0))
    raise ValueError(f"unknown task {task!r}")


def write_image_folder(root, task: str, n: int, seed: int) -> Path:
    """Write ``n`` images of ``task`` as ``root/<class>/<i>.png``."""
    from PIL import Image

    root = Path(root)
    x, y = make_images(task, n, seed)
    for i, (img, c) in enumerate(zip(x, y)):
        d = root / f"c{int(c)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


# ---------------------------------------------------------------------------- zoo
SOURCES = {  # zoo model -> (source task, samples, epochs, width)
    "cnn-digits-all": ("digits-all", 600, 12, 16),
    "cnn-digits-lo": ("digits-lo", 400, 12, 16),
    "cnn-digits-hi": ("digits-hi", 400, 6, 12),
    "cnn-shapes": ("shapes", 600, 10, 16),
    "cnn-stripes": ("stripes", 600, 3, 12),
    "cnn-textures": ("textures", 600, 3, 16),
}


def _cnn(width: int, classes: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 32), nn.ReLU(), nn.Linear(32, classes))


def build_zoo(folder, models=None, seed: int = 0) -> dict:
    """Pre-train the zoo (a second or so per model) into ``folder``; returns ``{name: spec}``.

    Also writes ``zoo.json`` with each model's meta-features (family, source task, params,
    depth, feature_dim, source accuracy) for the history store.
    """
    import torch
    from torch import nn

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs, meta = {}, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, name in enumerate(models or SOURCES):
            task, n, epochs, width = SOURCES[name]
            x, y = make_images(task, n, seed + 100 + k)
            y = np.unique(y, return_inverse=True)[1]
            classes = int(y.max()) + 1
            xt = torch.as_tensor(((x - 0.5) / 0.5)[:, None], dtype=torch.float32)
            yt = torch.as_tensor(y, dtype=torch.long)
            torch.manual_seed(seed + k)
            m = _cnn(width, classes)
            opt = torch.optim.Adam(m.parameters(), lr=1e-2)
            g = torch.Generator().manual_seed(seed + k)
            m.train()
            for _ in range(epochs):
                for b in torch.randperm(len(yt), generator=g).split(32):
                    opt.zero_grad()
                    nn.functional.cross_entropy(m(xt[b]), yt[b]).backward()
                    opt.step()
            m.eval()
            with torch.no_grad():
                acc = float((m(xt).argmax(1) == yt).float().mean())
            path = folder / f"{name}.pt"
            torch.jit.save(torch.jit.script(m), str(path), _extra_files={"recommender.json": json.dumps(META)})
            specs[name] = f"{name}=torchscript:{path}"
            meta.append({"name": name, "modality": "image", "family": "cnn", "architecture": f"cnn-w{width}",
                         "input_size": SIZE, "params": float(sum(p.numel() for p in m.parameters())),
                         "depth": 4, "feature_dim": 32, "pretrain_dataset": task.split("-")[0],
                         "source_accuracy": acc})
    finally:
        torch.set_num_threads(threads)
    (folder / "zoo.json").write_text(json.dumps(meta, indent=1))
    return specs


def zoo_models_meta(folder) -> list[dict]:
    return json.loads((Path(folder) / "zoo.json").read_text())


# ---------------------------------------------------------------------------- text
def fill_history(store, root, specs: dict, tasks, cfg, home) -> None:
    """Real fine-tunes (``cfg``) of every zoo model in ``specs`` on every task in ``tasks``
    (image folders under ``root/data``), stored as the test bed's history."""
    store.commit(models=zoo_models_meta(Path(root) / "zoo"))
    for task in tasks:
        data = load_task(Path(root) / "data" / task)
        for spec in specs.values():
            r = run_trial(store, spec, task, data, cfg, home=home, mlflow=False)
            if r.status != "completed":
                raise RuntimeError(f"test-bed fine-tune of {spec} on {task} failed: {r.error}")


def build_bed(root, tasks, cfg, *, images: int, new_images: int) -> dict:
    """The offline test bed: the zoo, ``tasks`` with ``images`` images each, a new target task
    ``digits-new`` (``new_images``), and ``root/history.db`` holding the zoo's fine-tunes on
    ``tasks``. One compute thread while it builds. Returns ``{"root", "specs"}``."""
    import torch

    root = Path(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        specs = build_zoo(root / "zoo")
        for k, task in enumerate(tasks):
            write_image_folder(root / "data" / task, task, images, seed=10 + k)
        write_image_folder(root / "data" / "digits-new", "digits-all", new_images, seed=99)
        store = HistoryStore(f"sqlite:///{root / 'history.db'}")
        fill_history(store, root, specs, tasks, cfg, root / "home")
        store.dispose()
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "specs": specs}


TOPICS = {
    "sport": ["the team won the match", "a late goal decided the game", "the runner broke the record",
              "fans cheered at the stadium", "the coach praised the players"],
    "food": ["the soup was rich and warm", "fresh bread came out of the oven", "the chef added basil",
             "we shared a spicy curry", "the cake tasted of lemon"],
    "weather": ["heavy rain fell all night", "a cold wind blew from the north", "the sky cleared by noon",
                "snow covered the hills", "a storm is expected tomorrow"],
}


def write_text_task(path, n_per_class: int = 12, seed: int = 0) -> Path:
    """A CSV (text, label) of short generated sentences on three topics."""
    import csv

    rng = np.random.default_rng(seed)
    starts = ["", "today ", "yesterday ", "i think ", "they said "]
    rows = []
    for label, sents in TOPICS.items():
        for _ in range(n_per_class):
            rows.append((starts[rng.integers(len(starts))] + sents[rng.integers(len(sents))], label))
    rng.shuffle(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path
