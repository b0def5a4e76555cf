"""CLI command `edgerobust corrupt`: common-corruption sets for a finished bundle (numpy/scipy/Pillow, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerobust import ui
from edgerobust.cli.compress import corruption_lines
from edgerobust.cli.configured import ConfigFile, Flag, FlagValues, configured
from edgerobust.cli.options import CorruptionSeverities, Corruptions, Overwrite

BundleArg = Annotated[Optional[Path], typer.Argument(
    help="The bundle folder (or its model.onnx). Default: the config file's `bundle`.", show_default=False,
    metavar="BUNDLE")]

CorruptSeed = Annotated[Optional[int], typer.Option(
    "--seed", min=0, show_default=False,
    help="Seeds the corruption sets. Default: the seed the bundle was compressed with (its manifest's "
         "config.prepare.seed; 0 where it records none), so the sets match those `compress --corruptions` makes.")]

F = Flag
# Every corrupt flag and the key it sets in edgerobust.workstation.corrupt.sets.CorruptConfig's schema.
CORRUPT_FLAGS = (
    F("corruptions", Corruptions, "default", "corruptions"),
    F("corruption_severities", CorruptionSeverities, "1,3,5", "corruption_severities"),
    F("seed", CorruptSeed, None, "seed"), F("overwrite", Overwrite, False, "overwrite"),
)


@configured(CORRUPT_FLAGS)
def corrupt_cmd(bundle: BundleArg = None, config: ConfigFile = None, *, flags: FlagValues) -> None:
    """Make common-corruption sets for a bundle after the fact, from its eval.npz, into BUNDLE/corruptions/.

    The same sets compress makes with --corruptions: every corruption at every severity over the evaluation
    rows, hashed into the manifest (the bundle is verified first). `edgerobust audit BUNDLE/model.onnx` then
    replays them on base, deployed and every variant: accuracy per corruption and severity, mCE against the
    base, and the exact McNemar test of deployed against base.
    """
    from edgerobust.workstation.corrupt.sets import CorruptConfig, corrupt_bundle

    cfg = flags.build(CorruptConfig, config, {"bundle": str(bundle) if bundle is not None else None})
    b, run = corrupt_bundle(cfg)
    for line in corruption_lines({**run.record(), "files": run.files}):
        ui.out.print(line, highlight=False)
    ui.out.print(f"manifest rewritten: {b.root / 'manifest.json'}. On the device: edgerobust audit "
                 f"{b.root / 'model.onnx'}", markup=False)


def register(app: typer.Typer) -> None:
    app.command(name="corrupt", no_args_is_help=True)(corrupt_cmd)
