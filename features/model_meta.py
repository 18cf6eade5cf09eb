"""Model meta-features computed from the architecture: parameter count and GMACs.

``GMACs = FLOPs / 2 / 1e9`` at the model's input size, with FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a zero input
(batch 1). A multiply-accumulate is two FLOPs, so a ``Linear(i, o)`` counts ``i*o`` MACs
and a ``Conv2d(c, k, kh x kw)`` producing an ``H x W`` map counts ``c*k*kh*kw*H*W``.
"""
from __future__ import annotations

from history.errors import RecommenderError


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def count_gmacs(module, input_size: int | tuple, channels: int = 3) -> float:
    """GMACs of one forward pass of ``module`` on a (1, channels, H, W) input (or a given shape)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(input_size, int):
        shape = (1, channels, input_size, input_size)
    else:
        shape = tuple(input_size)
    x = torch.zeros(shape)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            module(x)
    except Exception as exc:
        raise RecommenderError(f"cannot run {type(module).__name__} on an input of shape {shape} "
                               f"to count its FLOPs: {exc}") from None
    finally:
        module.train(was_training)
    return fc.get_total_flops() / 2 / 1e9


def build_timm(name: str):
    """A timm model without weights, or None when timm is not installed."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return None
    import timm

    try:
        return timm.create_model(name.split(".")[0], pretrained=False)
    except Exception:
        return None


def fill_model_meta(store, name: str, module=None, input_size: int | None = None, *, overwrite: bool = False) -> dict:
    """Compute params / GMACs of model ``name`` and store them with ``store.update_model``.

    ``module``: a torch module; by default the model is built from timm by name (when timm
    is installed). ``input_size`` defaults to the stored one, else 224. Fields already in
    the store are kept unless ``overwrite``. Returns the fields written.
    """
    row = store.get_model(name)
    if not overwrite and row.get("params") is not None and row.get("gmacs") is not None:
        return {}
    if module is None:
        module = build_timm(row.get("architecture") or name)
        if module is None:
            raise RecommenderError(f"cannot build model {name!r} to count its parameters / GMACs: pass a torch "
                                   "module, or install timm (pip install -c constraints.txt timm) for timm names.")
    size = int(input_size or row.get("input_size") or 224)
    out = {}
    if overwrite or row.get("params") is None:
        out["params"] = float(count_params(module))
    if overwrite or row.get("gmacs") is None:
        out["gmacs"] = float(count_gmacs(module, size))
    if row.get("input_size") is None:
        out["input_size"] = size
    store.update_model(name, **out)
    return out
