"""Feature-extraction throughput benchmark: ``python -m experiments.bench_extract``.

Measures images/s of :class:`features.extract.TorchAdapter` (forward hook on the last
``nn.Linear``, softmax probabilities, batched ``no_grad`` eval) for a small CNN on random
inputs at 32x32 and 224x224, batch 64, on CPU by default. One warm-up pass is excluded;
the median of ``--repeats`` timed passes is reported. Prints one line per size.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch
from torch import nn

from features.extract import TorchAdapter, resolve_device


def small_cnn(classes: int = 1000) -> nn.Module:
    """A 4-stage CNN (0.53 M parameters with the 1000-class head), global pooling, MLP head."""
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 256), nn.ReLU(),
                         nn.Linear(256, classes))


def bench(size: int, n: int, batch_size: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = small_cnn()
    x = torch.randn(n, 3, size, size)
    adapter = TorchAdapter(model, f"small_cnn@{size}")
    adapter.extract(x[:batch_size], batch_size=batch_size, device=device, progress=False)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = adapter.extract(x, batch_size=batch_size, device=device, progress=False)
        if r.features.shape != (n, 256):  # pragma: no cover - sanity
            raise RuntimeError(f"unexpected feature shape {r.features.shape}")
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"size": size, "n": n, "seconds": t, "images_per_s": n / t}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_extract", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="32,224", help="comma-separated input sizes (default 32,224)")
    p.add_argument("--n", type=int, default=512, help="images per timed pass at 32x32 (default 512)")
    p.add_argument("--n-large", type=int, default=256, help="images per timed pass at >= 128 px (default 256)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    print(f"# bench_extract {datetime.date.today().isoformat()} torch {torch.__version__} device {dev} "
          f"threads {torch.get_num_threads()} cpu {platform.processor() or platform.machine()} "
          f"batch {a.batch_size} repeats {a.repeats}")
    for s in (int(v) for v in a.sizes.split(",")):
        r = bench(s, a.n if s < 128 else a.n_large, a.batch_size, str(dev), a.repeats)
        print(f"small_cnn {s}x{s}: {r['images_per_s']:.1f} images/s ({r['n']} images in {r['seconds']:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
