"""Adversarial sets: a registry of torchattacks attacks, their configs, and the crafting loop.

Every attack runs against the *pixel-space model*: an ``nn.Module`` in eval mode that takes
float32 pixels in [0, 1] (N, C, H, W) with normalization inside it (``edgerobust.workstation.model.nets.PixelModel``),
so torchattacks' default [0, 1] range applies and ``eps`` is measured in pixel units.

Bound. Every set satisfies ``||x_adv - x|| <= eps`` in its attack's norm (per sample, up to
float32 rounding) and ``0 <= x_adv <= 1``: after the attack, each batch is projected onto the
eps ball and clipped to [0, 1]. For every attack but ``cw`` this changes nothing beyond rounding;
for ``cw`` (a minimum-norm attack with no eps of its own) it is how ``eps`` applies. ``eps = 0``
skips the attack and yields the clean inputs (a baseline row). Non-finite pixels an attack
might return are replaced by the clean ones and counted in ``meta["nonfinite_replaced"]``.

Names. A set is named ``<attack>_<eps>``, where ``<eps>`` is the eps as typed, lower-cased, with
``/`` written ``-`` and any character other than ``[0-9a-z.-]`` written ``_``: ``8/255`` gives
``pgd_8-255``, ``0.03`` gives ``pgd_0.03``. An AttackSpec built from a float alone types it as
``format(eps, ".6g")`` (``0.0313725``).

Families. ``autoattack`` in an attacks text stands for AutoAttack's standard components (apgd 100
steps, apgd-t 100, fab-t 100, square 5000 queries), each its own set at each eps, whose meta
records ``"family": "autoattack"`` and the torchattacks arguments used (``meta["params"]``);
``apgd-t:20`` next to it changes one member's budget (see ``spec``). On the CPU, ``craft_sets``
first says the expected time (``craft_time``).

Randomness. ``craft_set`` seeds torch with ``spec.seed`` inside ``torch.random.fork_rng``, so the
caller's CPU RNG state (and that of the model's CUDA device) is restored afterwards; a set is
reproducible for the same model, inputs, spec and ``batch_size``. APGD and Square also take
the seed as a constructor argument.

torch and torchattacks are imported only when crafting: the registry and the parsers are
torch-free, so the CLI can list attacks without them.
"""
from __future__ import annotations

from .craft import craft_set, craft_sets
from .cost import CraftTime, craft_time
from .registry import ATTACKS, FAMILIES, NORMS, OPTIONS, AttackEntry, AttackFamily
from edgerobust.eps import parse_eps
from .spec import (AttackItem, AttackSpec, eps_slug, make_specs, parse_attack_items, parse_attacks, parse_eps_grid,
                   split_eps_grid)

__all__ = [
    "ATTACKS", "FAMILIES", "NORMS", "OPTIONS", "AttackEntry", "AttackFamily", "AttackItem", "AttackSpec", "CraftTime",
    "craft_set", "craft_sets", "eps_slug", "craft_time", "make_specs", "parse_attack_items", "parse_attacks",
    "parse_eps", "parse_eps_grid", "split_eps_grid",
]
