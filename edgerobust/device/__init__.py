"""The device half: torch-free, never importing torch, even lazily. ``audit`` and ``compare`` at the
top, over ``files`` (bundle I/O), ``runtime`` (profiles, sessions, latency, memory, the host),
``scores`` (replay, statistics, robust accuracy, the query attack, sanity checks) and ``render``
(reports, pages, tables, the headline)."""
