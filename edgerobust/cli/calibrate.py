"""CLI command `calibrate`: time a device's kernels once, so that any bundle's latency on it can be estimated anywhere.

Torch-free: it runs on the device itself (numpy, onnx, onnxruntime).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerobust import ui
from edgerobust.cli.audit import FallbackOpt, JsonOpt, ProfileOpt, resolve_profile_line
from edgerobust.cli.options import Overwrite, Seed

QUICK_SCALE = 0.3


def calibrate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="The calibration file to write (JSON, about 1 MB), e.g. "
                                                          "pi5.json: copy it to any host and pass it to `audit "
                                                          "--estimate` or `profile --estimate` there.",
                                      show_default=False)],
    profile: ProfileOpt = None,
    dtypes: Annotated[Optional[str], typer.Option("--dtypes", show_default=False,
                                                  help="Precisions to time, comma-separated: fp32, fp16, int8. "
                                                       "Default: fp32,int8, and fp16 too where the profile's first "
                                                       "provider is CUDA or TensorRT.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help=f"A {QUICK_SCALE:g} grid timed once: about a minute, for a "
                                                        "first look; the band comes out wider.")] = False,
    grid_scale: Annotated[float, typer.Option("--grid-scale", min=0.01, max=4.0,
                                              help="The grid's size relative to the full one (about 380 kernels "
                                                   "per precision, 30% of them at a batch of 8, and 36 small "
                                                   "networks per precision).")] = 1.0,
    passes: Annotated[int, typer.Option("--passes", min=1, help="Times each kernel is timed, in shuffled order; "
                                                                "the fastest kept (a neighbour only slows a "
                                                                "kernel down).")] = 2,
    seconds: Annotated[float, typer.Option("--seconds", min=0.001, max=10.0,
                                           help="Timed runs per kernel and pass last at least this long (each "
                                                "kernel runs at least 10 times); shorter is quicker and "
                                                "noisier.")] = 0.08,
    holdout: Annotated[float, typer.Option("--holdout", min=0.05, max=0.45,
                                           help="Share of the kernels kept out of the fit: their errors are "
                                                "shown per kind, and give the band where the calibration timed "
                                                "fewer than 5 networks.")] = 0.2,
    seed: Seed = 0,
    allow_fallback: FallbackOpt = False,
    overwrite: Overwrite = False,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate this device for latency estimates: time a grid of the kernels bundles use, fit a model per kernel type.

    The grid's kernels (convolutions, linear layers, pools, and the data movement between them:
    concatenations, slices, channel shuffles, layout reorders, quantize nodes) are each timed as this
    device's runtime runs them, at a batch of one image and, for some, of eight; then a few small networks
    of the calibration's own are timed whole and predicted, and their errors become every estimate's band. Run it once on the device (a few minutes,
    torch-free). Then, on any host, `edgerobust audit BUNDLE/model.onnx --estimate FILE` (or `profile
    MODEL --estimate FILE`) predicts every model's latency on this device at each batch size, with its
    band.
    """
    from edgerobust.edge.estimate.calibrate import CalibrateConfig, calibrate, to_json
    from edgerobust.edge.render.estimate_lines import calibration_table

    prof, _, line = resolve_profile_line(profile)
    ui.info(line)
    config = CalibrateConfig(profile=prof, out=out, dtypes=tuple(dtypes.split(",")) if dtypes else None,
                             scale=QUICK_SCALE if quick else grid_scale, passes=1 if quick else passes,
                             holdout=holdout, seconds=seconds, seed=seed, allow_fallback=allow_fallback, overwrite=overwrite)
    cal = calibrate(config)
    if as_json:
        typer.echo(json.dumps(to_json(cal), indent=2))
        return
    title, head, rows, notes = calibration_table(cal)
    ui.out.print(ui.table(title, head, rows))
    for n in notes:
        ui.out.print(f"  {n}", markup=False, highlight=False)
    ui.info(f"Calibration written to {out}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
