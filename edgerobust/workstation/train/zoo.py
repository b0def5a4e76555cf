"""Training the reference zoo models on their bundled data: `edgerobust zoo train NAME -o model.pt`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgerobust.workstation.data.sources import load_data, split
from edgerobust.workstation.resources.torch_device import on_device, resolve_device
from edgerobust.errors import UsageError
from edgerobust.workstation.train.finetune import accuracy, train
from edgerobust.workstation.configs import TrainConfig
from edgerobust.workstation.model.load import save_checkpoint
from edgerobust.workstation.model.nets import ZOO, PixelModel


@dataclass
class ZooResult:
    name: str
    path: Path
    eval_acc: float
    params: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def input_spec(ds, data: str, image_size: int) -> dict:
    return {"name": "input", "shape": [None, *ds.input_shape], "dtype": "float32", "layout": "NCHW",
            "value_range": [0.0, 1.0], "mean": list(ds.mean), "std": list(ds.std),
            "normalization": "inside-model", "num_classes": ds.num_classes, "class_names": ds.class_names,
            "data": data, "image_size": image_size}


def train_zoo(name: str, out: str | Path, seed: int = 0, epochs: int | None = None,
              device: str = "cpu") -> ZooResult:
    """Train zoo model ``name`` on its data (torch on ``device``) and save a self-describing checkpoint."""
    if name not in ZOO:
        raise UsageError(f"Unknown zoo model '{name}'.", fix=f"Zoo models: {', '.join(ZOO)}.")
    dev = resolve_device(device)
    entry = ZOO[name]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    ds = load_data(entry.data, image_size=entry.image_size)
    sp = split(ds, seed=seed)
    net = entry.factory(num_classes=ds.num_classes, in_channels=ds.input_shape[0])
    model = PixelModel(net, ds.mean, ds.std)
    cfg = TrainConfig(epochs=epochs if epochs is not None else entry.epochs, lr=entry.lr,
                      batch_size=entry.batch_size)
    with on_device(model, dev):
        res = train(model, sp.train.x, sp.train.y, sp.val.x, sp.val.y, cfg, description=f"train {name} on {dev}",
                    seed=seed)
    eval_acc = accuracy(model, sp.eval.x, sp.eval.y)
    spec = input_spec(ds, entry.data, entry.image_size)
    save_checkpoint(out, net, f"zoo:{name}", ds.num_classes, spec,
                    info={"eval_acc": eval_acc, "seed": seed, "epochs": cfg.epochs, "history": res.history,
                          # the evaluation rows of split(data, seed) are unseen by this model
                          "trained_on": {"data": entry.data, "image_size": entry.image_size, "seed": seed,
                                         "split": "train"}})
    return ZooResult(name=name, path=Path(out), eval_acc=eval_acc, params=sum(p.numel() for p in net.parameters()),
                     seconds=time.perf_counter() - t0, history=res.history)
