"""The device half: torch-free, never importing torch, even lazily. ``audit`` and ``compare`` at the
top, over ``files`` (bundle I/O), ``runtime`` (profiles, sessions, latency, memory, the host),
``scores`` (replay, statistics, robust accuracy, the query attack, sanity checks), ``estimate`` (latency
on a calibrated device not at hand) and ``render`` (reports, pages, tables, the headline)."""
