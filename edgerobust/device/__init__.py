"""The device half: torch-free. Bundle I/O, device profiles, sessions and timing, the audit, statistics, reports and cross-device comparison. Never imports torch, even lazily."""
