"""What a bundle is built for: the device profile read once, and every choice that follows from it.

``resolve_target(profile, ...) -> TargetPlan`` decides, each with its reason:

- the target runtime (``cpu``, ``tensorrt``, ``cuda``, ``openvino-cpu``/``-gpu``/``-npu``, ``coreml``, ``qnn``,
  ``directml``): the profile's first execution provider;
  it decides which precision variant becomes model.onnx (edgerobust.workstation.quantize.variants.choose);
- ``round_to``: pruned channel counts are kept multiples of it (the profile's
  ``compress.round_to``, else 8);
- the int8 stem (the profile's ``compress.int8_stem``, else plain);
- the int8 route of the late convolutions (the profile's ``compress.int8_route``, else symmetric);
- the int8 target preset (``tensorrt`` for a TensorRT profile, else ``cpu``).

A value given explicitly wins over the profile. compress() calls it once and records the plan in
the manifest (``target``), so the Python API and the command line build the same bundle.
torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from edgerobust.registries import INT8_ROUTES, INT8_STEMS, INT8_TARGETS

DEFAULT_ROUND_TO = 8  # compress's channel rounding where neither the caller nor the profile sets one
DEFAULT_STEM = "plain"
DEFAULT_ROUTE = "symmetric"
RUNTIMES = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda", "OpenVINOExecutionProvider": "openvino",
            "CoreMLExecutionProvider": "coreml", "QNNExecutionProvider": "qnn", "DmlExecutionProvider": "directml"}
# else the CPU rule; OpenVINO's runtime names its device: openvino-cpu, openvino-gpu, openvino-npu


@dataclass(frozen=True)
class TargetPlan:
    """The choices a target profile makes for compress, each with where it came from."""

    profile: str | None  # the profile's name; None: no target profile (the CPU rule)
    runtime: str  # cpu, tensorrt, cuda, openvino-cpu/-gpu/-npu, coreml, qnn or directml
    round_to: int
    stem: str
    int8_target: str
    reasons: dict
    route: str = DEFAULT_ROUTE  # field -> where its value came from

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_target(profile: str | None, *, round_to: int | None = None, stem: str | None = None,
                   int8_target: str | None = None, route: str | None = None) -> TargetPlan:
    """The TargetPlan for ``profile`` (a name or a TOML path, or None); given values win.

    A profile that does not exist or does not validate is a ProfileError, raised here, before
    any work.
    """
    p = None
    if profile is not None:
        from edgerobust.edge.runtime.profiles import load_profile

        p = load_profile(profile)
    first = p.providers[0].name if p is not None and p.providers else "CPUExecutionProvider"
    runtime = RUNTIMES.get(first, "cpu")
    if runtime == "openvino":
        from edgerobust.edge.runtime.providers import openvino_device

        runtime += "-" + openvino_device(dict(p.providers[0].options)).split(".")[0].lower()
    where = f"the profile {p.name}" if p is not None else None
    reasons = {"runtime": f"{where}'s first execution provider, {first}" if where else "no target profile: the CPU"}

    def hinted(name: str, given, default):
        if given is not None:
            reasons[name] = "given"
            return given
        value = getattr(p.compress, name) if p is not None else None
        if value is not None:
            reasons[name] = f"{where}'s compress.{name}"
            return value
        reasons[name] = "the default"
        return default

    round_to = hinted("round_to", round_to, DEFAULT_ROUND_TO)
    stem = INT8_STEMS.resolve(hinted("int8_stem", stem, DEFAULT_STEM))
    reasons["stem"] = reasons.pop("int8_stem")
    route = INT8_ROUTES.resolve(hinted("int8_route", route, DEFAULT_ROUTE))
    reasons["route"] = reasons.pop("int8_route")
    if int8_target is not None:
        reasons["int8_target"] = "given"
    else:
        int8_target = "tensorrt" if runtime == "tensorrt" else "cpu"
        reasons["int8_target"] = (f"{where} runs TensorRT, which takes symmetric int8" if runtime == "tensorrt"
                                  else "the CPU preset (U8S8)" if runtime == "cpu"
                                  else f"the CPU preset (U8S8: uint8 activations, symmetric int8 weights), which {runtime} "
                                       "takes too" + (" (measured)" if runtime == "openvino-cpu" else " (documented, not measured)"))
    return TargetPlan(profile=p.name if p is not None else None, runtime=runtime, round_to=round_to, stem=stem,
                      int8_target=INT8_TARGETS.resolve(int8_target), reasons=reasons, route=route)
