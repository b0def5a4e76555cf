"""The workstation half: torch. The compress stages (prepare, prune, finetune, export, quantize, attacks, whitebox, sensitivity) and compress, which composes them."""
