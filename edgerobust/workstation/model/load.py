"""Loading a PyTorch model safely: state_dicts with `arch`, self-describing checkpoints, and
whole pickled modules only with `trust_model`.

Nothing in a model file runs unless the user said so: every file is first read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only.
"""
from __future__ import annotations

import importlib
import inspect
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgerobust.edge.files.npzio import sha256_file
from edgerobust.defaults import ARCH_HELP
from edgerobust.errors import ModelLoadError, UnsafeModelError, UsageError
from edgerobust.workstation.model.nets import ZOO
from edgerobust.workstation.model.torchvision_support import constructor_kwargs, drop_training_heads, keep_metadata

CHECKPOINT_FORMAT = "edgerobust-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedModel:
    """A model ready to prune: ``model`` takes *normalized* input (wrap it in nets.PixelModel)."""

    model: nn.Module
    arch: str | None
    num_classes: int
    kind: str  # "checkpoint", "state_dict" or "module"
    path: Path
    sha256: str
    input_spec: dict | None = None  # from a checkpoint: shape, mean, std, class_names, data
    info: dict = field(default_factory=dict)  # checkpoint metadata (metrics, training recipe)


# =============================================================================================
# architectures by name


def _arch_help() -> str:
    return ARCH_HELP


def build_arch(arch: str, num_classes: int | None, in_channels: int | None = None,
               state: dict | None = None) -> nn.Module:
    """Instantiate an architecture by name with random weights (never downloads anything).

    ``state`` (the weights to be loaded) decides constructor arguments it records, such as
    GoogLeNet's auxiliary heads or a ViT's image size (edgerobust.workstation.model.torchvision_support).
    """
    scheme, sep, name = arch.partition(":")
    kwargs: dict[str, Any] = constructor_kwargs(scheme, name, state)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if scheme in ZOO and not sep:
        name, scheme = scheme, "zoo"
    if scheme == "zoo":
        if name not in ZOO:
            raise UsageError(f"Unknown zoo model '{name}'.", fix=f"Zoo models: {', '.join(ZOO)}.")
        if in_channels is not None:
            kwargs["in_channels"] = in_channels
        return ZOO[name].factory(**kwargs)
    if scheme == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, **kwargs)
        except ValueError as exc:
            raise UsageError(f"torchvision has no model '{name}'.",
                             fix="See torchvision.models.list_models() for the names.") from exc
    if scheme == "timm":
        try:
            timm = importlib.import_module("timm")
        except ImportError as exc:
            raise UsageError("`arch` timm:... needs the 'timm' package.", fix="pip install timm") from exc
        if name not in timm.list_models():
            raise UsageError(f"timm has no model '{name}'.", fix="See timm.list_models() for the names.")
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
            raise UsageError(f"timm could not build '{name}'.", why=f"{type(exc).__name__}: {exc}") from exc
    if sep and scheme and name:
        mod = _import_user_module(scheme, arch)
        factory = getattr(mod, name, None)
        if not callable(factory):
            raise UsageError(f"'{scheme}' has no callable '{name}' (from `arch` {arch}).")
        params = inspect.signature(factory).parameters
        accepted = {k: v for k, v in kwargs.items()
                    if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
        model = factory(**accepted)
        if not isinstance(model, nn.Module):
            raise UsageError(f"`arch` {arch} returned a {type(model).__name__}, not a torch.nn.Module.")
        return model
    raise UsageError(f"Cannot read `arch` '{arch}'.", fix=f"Use {_arch_help()}.")


def _import_user_module(module: str, arch: str):
    """Import ``module`` of `arch` module:factory, looking in the current folder first (as pytest and
    uvicorn do), then on the Python path."""
    import sys

    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"Cannot import the module '{module}' named in `arch` {arch}.", why=str(exc),
                         fix=f"Run from the folder that holds {module.replace('.', '/')}.py, or install it "
                             "or put its folder on PYTHONPATH.") from exc
    finally:
        if added:
            sys.path.remove(cwd)


# =============================================================================================
# self-describing checkpoints


def save_checkpoint(path: str | Path, model: nn.Module, arch: str, num_classes: int, input_spec: dict,
                    info: dict | None = None, structure: dict | None = None) -> None:
    """Save a checkpoint that loads with ``weights_only=True`` and describes itself.

    ``structure`` (from :func:`structure_of`) records the layer sizes of a pruned model so that
    it can be rebuilt from ``arch`` without unpickling any code.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "num_classes": int(num_classes),
        "input": input_spec,
        "info": info or {},
        "structure": structure,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


_STRUCT_TYPES = (int, float, bool, str)


def structure_of(model: nn.Module) -> dict:
    """The size-defining attributes of every module (in_channels, out_features, num_heads, ...).

    Plain values only, so it survives ``weights_only=True``. torch-pruning changes these when it
    removes channels; restoring them plus the tensors rebuilds the pruned model.
    """
    out: dict[str, dict] = {}
    for name, module in model.named_modules():
        attrs = {}
        for k, v in vars(module).items():
            if k.startswith("_") and k not in ("_qkv_same_embed_dim",):
                continue
            if isinstance(v, _STRUCT_TYPES) or (isinstance(v, tuple) and all(isinstance(i, _STRUCT_TYPES) for i in v)):
                attrs[k] = list(v) if isinstance(v, tuple) else v
        out[name] = attrs
    return out


def apply_structure(model: nn.Module, structure: dict, state_dict: dict) -> nn.Module:
    """Reshape a freshly built model to a pruned ``structure`` and load ``state_dict`` into it."""
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        module = modules.get(name)
        if module is None:
            raise ModelLoadError(f"The checkpoint describes a layer '{name}' that the architecture lacks.")
        for k, v in attrs.items():
            cur = getattr(module, k, None)
            setattr(module, k, tuple(v) if isinstance(cur, tuple) and isinstance(v, list) else v)
    for key, tensor in state_dict.items():
        mod_name, _, attr = key.rpartition(".")
        module = modules.get(mod_name)
        if module is None:
            raise ModelLoadError(f"The checkpoint has weights for '{key}', a layer the architecture lacks.")
        if attr in module._parameters:
            old = module._parameters[attr]
            module._parameters[attr] = nn.Parameter(tensor.clone(), requires_grad=old.requires_grad if old is not None else True)
        elif attr in module._buffers:
            module._buffers[attr] = tensor.clone()
        else:
            raise ModelLoadError(f"The checkpoint has an unknown tensor '{key}'.")
    return model


# =============================================================================================
# loading


def load_model(path: str | Path, arch: str | None = None, num_classes: int | None = None,
               trust_model: bool = False) -> LoadedModel:
    """Load a model file for compression.

    Accepts (a) a state_dict with ``arch`` (``num_classes`` inferred from the last layer when not
    given), (b) an edgerobust checkpoint, which describes itself, (c) a whole pickled
    ``nn.Module``, only with ``trust_model=True``.
    """
    path = Path(path)
    _check_file(path)
    sha = sha256_file(path)
    obj = _safe_load(path, trust_model)

    if isinstance(obj, nn.Module):
        if isinstance(obj, torch.jit.ScriptModule):
            raise _torchscript_error(path)
        nc = num_classes or _infer_num_classes(obj.state_dict())
        return LoadedModel(model=obj.eval(), arch=arch, num_classes=nc or 0, kind="module", path=path, sha256=sha)

    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(obj, path, sha, num_classes)

    state = _find_state_dict(obj)
    if state is None:
        raise ModelLoadError(f"'{path}' holds a {type(obj).__name__}, not a model or a state_dict.",
                             fix="Save model.state_dict() (and pass `arch`), or an edgerobust checkpoint.")
    if not arch:
        raise UsageError(f"'{path}' is a state_dict (weights without the architecture).",
                         why="A state_dict does not say which network the weights belong to.",
                         fix=f"Pass `arch` naming it: {_arch_help()}.")
    nc = num_classes or _infer_num_classes(state)
    model = build_arch(arch, nc, state=state)
    _load_state(model, state, path, arch, nc)
    return LoadedModel(model=drop_training_heads(model).eval(), arch=arch, num_classes=nc or 0, kind="state_dict", path=path, sha256=sha)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"The model file '{path}' does not exist.", fix="Check the path.")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a folder, not a model file.")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"The model file '{path}' is empty.", fix="The file was not saved completely: save it again.")
    if path.suffix.lower() == ".onnx":
        raise ModelLoadError(f"'{path}' is an ONNX model; compress needs the PyTorch model.",
                             why="Structural pruning and fine-tuning work on an eager torch.nn.Module.",
                             fix="Pass the .pt/.pth file; an ONNX model can be measured with `edgerobust profile`.")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelLoadError(f"'{path}' is a damaged zip archive.", why=str(exc)) from exc
        base = {n.split("/", 1)[-1] for n in names}
        if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
            raise _torchscript_error(path)
        if any(n.endswith(("serialized_exported_program.json", "archive_format")) or "/models/" in n for n in names) \
                and not any(n.endswith("data.pkl") for n in names):
            raise ModelLoadError(f"'{path}' is a torch.export archive (ExportedProgram).",
                                 why="Structural pruning rewrites layers in place, which needs the eager "
                                     "torch.nn.Module; an exported graph is frozen.",
                                 fix="Save the eager model's state_dict() and pass `arch`.")
        if "data.pkl" not in base:
            raise ModelLoadError(f"'{path}' is a zip archive but not a PyTorch model file.",
                                 fix="Pass a file written by torch.save().")


def _torchscript_error(path: Path) -> ModelLoadError:
    return ModelLoadError(f"'{path}' is a TorchScript archive.",
                          why="Structural pruning rewrites layers in place, which needs the eager "
                              "torch.nn.Module; TorchScript holds a compiled graph.",
                          fix="Save the eager model's state_dict() and pass `arch`.")


def _safe_load(path: Path, trust_model: bool) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        # Only a pickle that names a global (a class or function to import and call) needs code;
        # "Unsupported operand" is a garbage opcode byte: a corrupt file, not a trust question.
        needs_code = "Unsupported global" in msg or "Unsupported class" in msg or "GLOBAL" in msg
        if not needs_code:
            raise _corrupt(path, exc) from exc
        if not trust_model:
            raise UnsafeModelError(
                f"'{path}' is a pickled Python object that needs code to be run to load it.",
                why="Unpickling a whole nn.Module imports and calls code named inside the file; a "
                    "malicious file can run anything on this machine. edgerobust refused to do that.",
                fix="If you trust where this file came from, pass `trust_model`. Better: save "
                    "model.state_dict() and pass `arch`.") from exc
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError/... on corrupt files
        raise _corrupt(path, exc) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"Loading the trusted model '{path}' failed.", why=f"{type(exc).__name__}: {exc}",
                             fix="Its classes must be importable here (install the package that defines them).") from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"'{path}' unpickled to a {type(obj).__name__}, not a torch.nn.Module.")
    return obj


def _corrupt(path: Path, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(f"'{path}' is not a readable PyTorch model file.",
                          why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                          fix="The file may be truncated or of another format: save it again with torch.save().")


def _find_state_dict(obj: Any) -> dict | None:
    if isinstance(obj, dict):
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                found = _find_state_dict(inner)
                if found is not None:
                    return found
    return None


def _infer_num_classes(state: dict) -> int | None:
    """The output size of the classifier in a state_dict: its last 2-D weight (a Linear), or a later 1x1
    convolution's (SqueezeNet classifies with one)."""
    last = None
    for k, v in state.items():
        if k.endswith("weight") and isinstance(v, torch.Tensor) and (
                v.ndim == 2 or (v.ndim == 4 and tuple(v.shape[2:]) == (1, 1))):
            last = v
    return int(last.shape[0]) if last is not None else None


def _load_state(model: nn.Module, state: dict, path: Path, arch: str, nc: int | None) -> None:
    state = keep_metadata(state, {k.removeprefix("module."): v for k, v in state.items()}, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs {arch} {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        details = []
        if shapes:
            details.append("shape mismatches: " + "; ".join(shapes[:3]))
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(f"The weights in '{path}' do not fit `arch` {arch}"
                             + (f" with {nc} classes" if nc else "") + ".",
                             why="; ".join(details),
                             fix="Check `arch` and `num_classes` against how the model was built.")
    model.load_state_dict(state)


def _from_checkpoint(obj: dict, path: Path, sha: str, num_classes: int | None) -> LoadedModel:
    version = obj.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ModelLoadError(f"'{path}' is an edgerobust checkpoint of version {version!r}; "
                             f"this edgerobust reads up to {CHECKPOINT_VERSION}.", fix="Upgrade edgerobust.")
    arch, nc = obj.get("arch"), obj.get("num_classes")
    if not isinstance(arch, str) or not isinstance(nc, int):
        raise ModelLoadError(f"The checkpoint '{path}' lacks its arch or num_classes.")
    if num_classes is not None and num_classes != nc:
        raise UsageError(f"`num_classes` {num_classes} contradicts the checkpoint '{path}', which has {nc} classes.")
    spec = obj.get("input") or {}
    shape = spec.get("shape") or [None, None]
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise ModelLoadError(f"The checkpoint '{path}' has no state_dict.")
    model = build_arch(arch, nc, in_channels=shape[1] if arch.removeprefix("zoo:") in ZOO else None, state=state)
    if obj.get("structure"):
        apply_structure(model, obj["structure"], state)
    else:
        _load_state(model, state, path, arch, nc)
    return LoadedModel(model=drop_training_heads(model).eval(), arch=arch, num_classes=nc, kind="checkpoint", path=path,
                       sha256=sha, input_spec=spec or None, info=obj.get("info") or {})
