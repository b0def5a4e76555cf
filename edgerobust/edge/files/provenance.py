"""Does a file belong to this audit, and what exactly was audited?

Refusals, each a BundleError naming the file: a model whose input differs from the bundle's
input spec, an adversarial set crafted on another model or evaluation set, or whose labels and
rows do not match eval.npz. :class:`Provenance` records what was audited by content (sha256 of
the base, the deployed model, the eval set, every adversarial and corruption set) with the bundle's own
record of how it was made; ``edgerobust compare`` uses the hashes to refuse reports of
different bundles. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.edge.files.bundle import AdvSet, adv_source
from edgerobust.errors import BundleError
from edgerobust.edge.runtime.sessions import OpenSession


def check_input_spec(s: OpenSession, spec: dict, where: str) -> None:
    """The model's input must match the bundle's input spec (name, rank, non-batch dims)."""
    want_name, want_shape = spec.get("name"), spec.get("shape")
    if want_name and s.input.name != want_name:
        raise BundleError(f"The {s.info.role} model '{s.info.model}' takes an input named '{s.input.name}', "
                          f"but {where} says '{want_name}'.",
                          fix="Re-export the model with the bundle's input name, or audit the model of this bundle.")
    if want_shape:
        got = list(s.input.shape)
        ok = len(got) == len(want_shape) and all(
            w is None or g is None or int(w) == g for w, g in zip(want_shape[1:], got[1:]))
        if not ok:
            raise BundleError(f"The {s.info.role} model '{s.info.model}' takes input shape {_fmt_shape(got)}, "
                              f"but {where} says {_fmt_shape(want_shape)}.",
                              fix="The model belongs to another bundle: audit it with its own bundle.")


def check_eval_spec(x_shape: tuple[int, ...], eval_set, spec: dict, where: str) -> None:
    """The evaluation set's inputs (``x_shape``, from the file ``eval_set``) must match the input spec
    (rank and non-batch dims)."""
    shape = spec.get("shape")
    if shape is not None and (not all(d is None or int(d) == g for d, g in zip(shape[1:], x_shape[1:]))
                              or len(shape) != len(x_shape)):
        raise BundleError(f"The evaluation set '{eval_set}' holds inputs of shape {list(x_shape[1:])}, "
                          f"but {where} says {_fmt_shape(shape)}.")


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def check_adv_provenance(adv: AdvSet, path: Path, base_sha: str | set[str], eval_sha: str, n_eval: int,
                         eval_y: np.ndarray, targets: dict[str, str] | None = None) -> None:
    """Refuse a set crafted on another model or eval set, or whose rows do not match eval.npz.

    A transfer set must carry the base model's hash (``base_sha256``). A white-box set
    (``source`` starting with ``whitebox``) was crafted on a compressed model: its
    ``target_sha256`` must be the hash of one of ``targets`` (sha256 -> file name: the
    audited model and the bundle's fp32 model).
    """
    meta = adv.meta
    source = adv_source(meta)
    if source.startswith("whitebox"):
        got = meta.get("target_sha256")
        targets = targets or {}
        if not got or got not in targets:
            raise BundleError(
                f"The white-box adversarial set '{path}' was crafted on a model that is not audited here.",
                why=(f"Its metadata records target {meta.get('target')!r} with sha256 {str(got)[:12]}…, "
                     f"which matches none of {', '.join(sorted(targets.values())) or 'the models audited'}.")
                if got else "Its metadata lacks target_sha256, so its origin cannot be checked.",
                fix="Audit the model the set was crafted on (the bundle's model.onnx), or craft the set again.")
        checks = (("eval_sha256", eval_sha, "evaluation set"),)
    elif source == "transfer":
        checks = (("base_sha256", base_sha, "base model"), ("eval_sha256", eval_sha, "evaluation set"))
    else:
        raise BundleError(f"The adversarial set '{path}' has an unknown source {source!r}.",
                          fix="Craft it again with this version of edgerobust.")
    for key, want, what in checks:
        got = meta.get(key)
        wanted = want if isinstance(want, (set, frozenset)) else {want}
        if got not in wanted:
            raise BundleError(
                f"The adversarial set '{path}' was crafted on another {what}.",
                why=f"Its metadata records {key} {str(got)[:12]}…, but the {what} used here has "
                    f"{' or '.join(sorted(w[:12] for w in wanted))}…."
                if got else f"Its metadata lacks {key}, so its origin cannot be checked.",
                fix="Craft the set again on this bundle's base model (`edgerobust attack`), or pass the "
                    "matching `baseline`/`eval_set`.")
    if adv.idx.size and (adv.idx.min() < 0 or adv.idx.max() >= n_eval):
        raise BundleError(f"The adversarial set '{path}' indexes rows outside the eval set ({n_eval} rows).")
    if not np.array_equal(adv.y, eval_y[adv.idx]):
        raise BundleError(f"The labels of the adversarial set '{path}' differ from the eval set's labels at its idx.",
                          fix="Craft the set again from this eval set.")


# =============================================================================================
# what was audited


@dataclass(frozen=True)
class Provenance:
    """What an audit measured, by content, and how the bundle was made.

    base_sha256 / deployed_sha256 / eval_sha256: the files audited (two audits of one bundle
    share all three). sets: adversarial and common-corruption set name (e.g. ``gaussian_noise_s3``) ->
    sha256 of its file. The rest comes from the
    bundle's manifest (empty without a bundle): manifest_sha256, when the bundle was created,
    the workstation's tool versions, the source model, and the compression settings.
    """

    base_sha256: str
    deployed_sha256: str
    eval_sha256: str
    sets: dict[str, str] = field(default_factory=dict)
    manifest_sha256: str | None = None
    bundle_created: str | None = None
    tool: dict = field(default_factory=dict)
    source: dict | None = None
    compression: dict = field(default_factory=dict)


def _compression(manifest: dict) -> dict:
    """The few compress settings a reader of a report asks about first."""
    cfg = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    prune = cfg.get("prune") if isinstance(cfg.get("prune"), dict) else {}
    quant = cfg.get("quant") if isinstance(cfg.get("quant"), dict) else {}
    out = {"sparsity": prune.get("sparsity", cfg.get("sparsity")), "criterion": prune.get("criterion"),
           "int8": cfg.get("int8"), "int8_mode": quant.get("mode") if cfg.get("int8") else None,
           "int8_target": quant.get("int8_target") if cfg.get("int8") else None}
    return {k: v for k, v in out.items() if v is not None}


def bundle_provenance(hashes: dict[str, str], sets: dict[str, str], manifest: dict | None,
                      manifest_sha256: str | None) -> Provenance:
    """A Provenance from the audited files' hashes (keys base, deployed, eval) and the manifest."""
    m = manifest or {}
    tool = m.get("tool") if isinstance(m.get("tool"), dict) else {}
    source = m.get("source") if isinstance(m.get("source"), dict) else None
    return Provenance(base_sha256=hashes["base"], deployed_sha256=hashes["deployed"], eval_sha256=hashes["eval"],
                      sets=dict(sets), manifest_sha256=manifest_sha256,
                      bundle_created=m.get("created") if isinstance(m.get("created"), str) else None,
                      tool={k: v for k, v in tool.items() if isinstance(v, (str, int, float))},
                      source=source, compression=_compression(m))
