"""Crafting: run one AttackSpec over samples in batches and return (or save) an AdvSet."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from edgerobust import __version__, events
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.errors import DataError, UsageError, require
from .cost import craft_time
from .gradcheck import masking_warning, probe_gradients
from .spec import AttackSpec

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch is imported lazily: `edgerobust audit` must run without it
    import torch


def craft_set(model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, spec: AttackSpec, *,
              batch_size: int = 256, idx: np.ndarray | None = None, base_sha256: str = "",
              eval_sha256: str = "", progress: Callable[..., None] | None = None) -> AdvSet:
    """Craft ``spec``'s adversarial set on the pixel-space ``model`` from clean ``x`` (N,C,H,W in [0, 1]).

    ``idx`` gives the rows of eval.npz the samples are (default ``0..N-1``); the two hashes
    tie the set to the base model and eval.npz. ``progress`` is called as ``progress(n,
    status=...)`` per batch; by default a Rich bar on stderr. The model comes back unchanged:
    same parameters, train/eval flags and requires_grad flags, no ``.grad`` written; the
    caller's torch RNG state is restored (see the package docstring). The attacks that need the
    number of classes (apgd-t, fab-t) get the model's output width, recorded in ``meta["params"]``.
    A gradient attack's set also gets ``meta["gradient_check"]`` (edgerobust.workstation.attacks.gradcheck),
    with a warning when the model's gradients look masked.
    """
    torch = require("torch")
    torchattacks = require("torchattacks")
    x, y, idx = _check_samples(x, y, idx)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError(f"batch_size must be an integer >= 1; got {batch_size!r}.", fix="Use e.g. batch_size=256.")
    device = _device(model)
    n = len(y)
    adv = np.empty_like(x)
    clean_ok = np.zeros(n, dtype=bool)
    adv_ok = np.zeros(n, dtype=bool)
    nonfinite = 0
    bar = contextlib.nullcontext(progress) if progress is not None else events.task(spec.describe(), total=n)
    start = time.perf_counter()
    with _frozen(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), bar as advance:
        if spec.n_classes is None:
            spec = dataclasses.replace(spec, n_classes=_classes(model, torch.from_numpy(x[:1]).to(device)))
        entry, params = spec.entry, spec.params()
        torch.manual_seed(spec.seed)
        attack = getattr(torchattacks, entry.torchattacks_class)(model, **params) if spec.eps > 0 else None
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            xb = torch.from_numpy(x[lo:hi]).to(device)
            yb = torch.from_numpy(y[lo:hi]).to(device)
            clean_ok[lo:hi] = _correct(model, xb, yb)
            if attack is None:
                xa = xb.clone()
            else:
                with torch.enable_grad():
                    xa = attack(xb, yb).detach()
            bad = ~torch.isfinite(xa)
            nonfinite += int(bad.flatten(1).any(1).sum())
            xa = torch.where(bad, xb, xa)
            xa = _project(xa, xb, entry.norm, spec.eps)
            adv_ok[lo:hi] = _correct(model, xa, yb)
            adv[lo:hi] = xa.cpu().numpy()
            advance(hi - lo, status=f"adv acc {adv_ok[:hi].mean():.1%}")
        seconds = time.perf_counter() - start
        gradient_attack = attack is not None and entry.evals(params)[0] > 0  # did it see any gradient?
        check = probe_gradients(model, x, y, min(n, batch_size), clean_ok, adv_ok) if gradient_attack else None
    delta = (adv.astype(np.float64) - x.astype(np.float64)).reshape(n, -1)
    max_pert = float(np.abs(delta).max(initial=0.0) if entry.norm == "Linf"
                     else np.sqrt((delta ** 2).sum(1)).max(initial=0.0))
    meta = {
        "name": spec.name, "source": "transfer", "attack": spec.attack, "family": spec.family,
        "torchattacks_class": entry.torchattacks_class,
        "params": params, "norm": entry.norm, "eps": spec.eps, "eps_text": spec.eps_text,
        "seed": spec.seed, "batch_size": int(batch_size), "n": n,
        "base_sha256": base_sha256, "eval_sha256": eval_sha256,
        "base_accuracy": float(clean_ok.mean()), "base_adv_accuracy": float(adv_ok.mean()),
        "base_attack_success_rate": float((clean_ok & ~adv_ok).sum() / max(int(clean_ok.sum()), 1)),
        "max_perturbation": max_pert, "nonfinite_replaced": nonfinite,
        "bound": f"{entry.norm} ball of radius eps around each input, clipped to [0, 1]",
        "versions": {"edgerobust": __version__, "torch": torch.__version__,
                     "torchattacks": torchattacks.__version__, "numpy": np.__version__},
        "seconds": round(seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if check is not None:
        meta["gradient_check"] = check
        if check["masked"]:
            logger.warning(masking_warning(spec.describe(), check))
    if nonfinite:
        logger.warning(f"{spec.describe()}: the attack returned NaN/inf for {nonfinite} sample(s); "
                       "their non-finite pixels were replaced by the clean ones.")
    return AdvSet(x=adv, y=y.copy(), idx=idx, meta=meta)


def craft_sets(model: "torch.nn.Module", evalset: EvalSet, specs: list[AttackSpec], out_dir: Path, *,
               base_sha256: str, eval_sha256: str, batch_size: int = 256) -> list[Path]:
    """Craft every spec on all of ``evalset`` and write ``out_dir/<spec.name>.npz`` for each (pickle-free).

    On the CPU, first says the expected time (edgerobust.workstation.attacks.cost); each set,
    a family's members included, gets its own progress bar named by spec.describe().
    """
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"Two attack specs would both write {', '.join(d + '.npz' for d in dupes)}.",
                         why="A set is named by attack and eps only.",
                         fix="Give each attack each eps once (other options apply to all specs alike).")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    idx = np.arange(len(evalset.y), dtype=np.int64)
    if _device(model).type == "cpu" and any(s.eps > 0 for s in specs):
        x, _, _ = _check_samples(evalset.x, evalset.y, None)
        with _frozen(model):
            logger.info(craft_time(model, x, specs, evalset.y, batch_size=batch_size).message())
    paths = []
    for spec in specs:
        s = craft_set(model, evalset.x, evalset.y, spec, batch_size=batch_size, idx=idx,
                      base_sha256=base_sha256, eval_sha256=eval_sha256)
        path = out_dir / f"{spec.name}.npz"
        s.save(path)
        paths.append(path)
    return paths


# =============================================================================================
# helpers


def _check_samples(x, y, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"Adversarial crafting needs float images of shape (N, C, H, W); got {x.dtype} {x.shape}.")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"Labels must be 1-D integers, one per image; got {y.dtype} {y.shape} for {len(x)} images.")
    if len(x) == 0:
        raise DataError("There are no samples to attack.", fix="Use more samples (`eval_samples`).")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"The images span [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]; attacks need pixels in [0, 1].",
                        why="Attacks clip to [0, 1] and measure eps in pixel units; normalized inputs break both.",
                        fix="Pass raw pixels and put the normalization inside the model (edgerobust.workstation.model.nets.PixelModel).")
    idx = np.arange(len(y), dtype=np.int64) if idx is None else np.asarray(idx)
    if idx.shape != y.shape or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"idx must hold one integer row index per sample; got {idx.dtype} {idx.shape}.")
    return (np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64),
            idx.astype(np.int64))


def _device(model) -> "torch.device":
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _frozen(model) -> Iterator[None]:
    """Eval mode and no parameter gradients while crafting; every flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


def _classes(model, x1) -> int:
    """The model's output width (its number of classes), from one sample."""
    import torch

    with torch.no_grad():
        logits = model(x1)
    if logits.ndim != 2:
        raise DataError(f"The model returns outputs of shape {tuple(logits.shape)}; attacks need (N, classes) logits.")
    return int(logits.shape[1])


def _correct(model, xb, yb) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model(xb)
    if logits.ndim != 2:
        raise DataError(f"The model returns outputs of shape {tuple(logits.shape)}; attacks need (N, classes) logits.")
    if int(yb.max()) >= logits.shape[1] or int(yb.min()) < 0:
        raise DataError(f"Labels run from {int(yb.min())} to {int(yb.max())}, "
                        f"but the model has {logits.shape[1]} classes.",
                        fix="Check that the data and the model belong together (`num_classes`, class order).")
    return (logits.argmax(1) == yb).cpu().numpy()


def _project(xa, x, norm: str, eps: float):
    """Project ``xa`` onto the ``norm`` ball of radius ``eps`` around ``x``, then clip to [0, 1]."""
    import torch

    delta = xa - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, *([1] * (delta.ndim - 1)))
    return torch.clamp(x + delta, 0.0, 1.0)
