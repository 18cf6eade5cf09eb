"""Benchmark: scoring a zoo with the local executor and with Ray on 1 and 2 workers.

    python -m experiments.bench_executor [--models 6] [--width 48] [--image-size 64] [--probe-size 400]

Builds a zoo of ``--models`` seeded CNNs (TorchScript, random weights: only the time counts)
heavy enough that one model's task (feature extraction on the probe + LogME, H-score, LEEP,
kNN) takes several seconds on one CPU thread, and an image folder to score them on. Then it
runs ``recommender score --no-cache`` over the zoo three times, each into a fresh store:

* ``local``: the local executor (in process, one model after the other);
* ``ray x1``: a local Ray cluster of one worker node (1 CPU);
* ``ray x2``: the same cluster plus a second worker node (1 CPU each).

Every process uses one compute thread (``OMP_NUM_THREADS=1``), so that one worker is one
core. Before the timed Ray runs, one warm-up run starts the Ray worker processes (their
``import torch`` is paid once per worker, not per task; it is reported apart).

Per-task overhead is measured two ways: (a) 40 empty tasks through the executor on a
warm one-worker cluster: wall time / 40; (b) on the real zoo: (ray x1 wall - local wall) /
models. Targets (issue 12): overhead < 0.5 s per task; ray x2 at least 1.6x faster than
ray x1 when tasks take >= 5 s. The machine's load average is printed: on a shared machine
two workers cannot get two free cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# one compute thread per process (above), pinned before numpy (loaded by experiments.tinyzoo) and torch load
os.environ["OMP_NUM_THREADS"] = "1"

from experiments.tinyzoo import write_image_folder  # noqa: E402
from recommender.cli import main as recommender_main  # noqa: E402
from recommender.executor import RayExecutor, Task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = "logme,hscore,leep,knn1"


def _noop(x):
    return x


def _cnn(width: int, classes: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 64), nn.ReLU(), nn.Linear(64, classes))


def build(root: Path, n_models: int, width: int, image_size: int, n_images: int) -> tuple[list[str], Path]:
    import numpy as np
    import torch

    meta = json.dumps({"input_size": image_size, "channels": 1, "mean": [0.5], "std": [0.5], "modality": "image"})
    specs = []
    for i in range(n_models):
        path = root / "zoo" / f"m{i}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        m = torch.jit.script(_cnn(width, 10, i).eval())
        torch.jit.save(m, str(path), _extra_files={"recommender.json": meta})
        specs.append(f"m{i}=torchscript:{path}")
    data = write_image_folder(root / "data", "digits-all", n_images, seed=0)
    np.random.seed(0)
    return specs, data


class Cluster:
    """A local Ray cluster on 127.0.0.1 in a private temp dir; nodes added one at a time."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
        self.ray = str(Path(sys.executable).parent / "ray")
        self.common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "100000000",
                       "--disable-usage-stats"]
        self.nodes = 0

    def add_node(self):
        if self.nodes == 0:
            cmd = [self.ray, "start", "--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir",
                   self.tmp, *self.common]
        else:
            cmd = [self.ray, "start", "--address", self.address, *self.common]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=180)
        self.nodes += 1

    def stop(self):
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if self.tmp.encode() in (p / "cmdline").read_bytes():
                        os.kill(int(p.name), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def score(home: Path, specs, data, probe_size, *extra) -> float:
    home.mkdir(parents=True, exist_ok=True)
    argv = ["--home", str(home), "score", "--dataset", "bench", "--data", str(data), "--models", ",".join(specs),
            "--methods", METHODS, "--probe-size", str(probe_size), "--no-cache", "--no-progress", "--format", "json",
            *extra]
    t = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = recommender_main(argv)
    dt = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"score failed (rc {rc}) with {extra}")
    res = json.loads(out.getvalue())
    if res["failed"]:
        raise SystemExit(f"score had failures: {res['failed']}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--probe-size", type=int, default=400)
    ap.add_argument("--empty-tasks", type=int, default=40)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    torch.set_num_threads(1)

    print(f"bench_executor {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    cluster = Cluster()
    try:
        specs, data = build(root, args.models, args.width, args.image_size, max(args.probe_size, 100))
        common = (specs, data, args.probe_size)
        t_local = score(root / "local", *common)
        print(f"local: {t_local:.1f}s for {args.models} models ({t_local / args.models:.2f}s per model)")

        cluster.add_node()
        ray_args = ("--executor", "ray", "--address", cluster.address)
        t_warm = score(root / "warm1", *common, *ray_args)
        t1 = score(root / "ray1", *common, *ray_args)
        ex = RayExecutor(cluster.address)
        list(ex.map([Task("w", _noop, (0,))]))
        t = time.perf_counter()
        list(ex.map([Task(str(i), _noop, (i,)) for i in range(args.empty_tasks)]))
        t_empty = (time.perf_counter() - t) / args.empty_tasks
        ex.shutdown()
        print(f"ray x1: {t1:.1f}s (first run, with worker start-up: {t_warm:.1f}s)")

        cluster.add_node()
        score(root / "warm2", *common, *ray_args)
        t2 = score(root / "ray2", *common, *ray_args)
        print(f"ray x2: {t2:.1f}s")
        load = os.getloadavg()
        over = (t1 - t_local) / args.models
        print("\n| executor | wall (s) | per model (s) | speed-up vs ray x1 |")
        print("|---|---|---|---|")
        print(f"| local | {t_local:.1f} | {t_local / args.models:.2f} | |")
        print(f"| ray x1 | {t1:.1f} | {t1 / args.models:.2f} | 1.00x |")
        print(f"| ray x2 | {t2:.1f} | {t2 / args.models:.2f} | {t1 / t2:.2f}x |")
        print(f"\nper-task overhead: empty task {1000 * t_empty:.0f} ms; on the zoo (ray x1 - local) / models "
              f"{over:.2f} s (target < 0.5 s: {'met' if max(t_empty, over) < 0.5 else 'NOT met'})")
        slow = t_local / args.models >= 5
        print(f"2 workers vs 1: {t1 / t2:.2f}x (target >= 1.6x on tasks >= 5 s: "
              f"{'met' if t1 / t2 >= 1.6 else 'NOT met'}; tasks here take {t_local / args.models:.1f} s"
              f"{'' if slow else ', under 5 s: raise --probe-size or --width'})")
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
