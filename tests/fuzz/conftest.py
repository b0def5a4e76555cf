"""After a run of the fuzzers: how many cases each test fed, how many gave a result and how many
the project's own error, and its slowest case (the figures docs/architecture.md quotes)."""


def pytest_terminal_summary(terminalreporter):
    from fuzzkit import SLOWEST, TALLY

    if not TALLY:
        return
    tr = terminalreporter
    tr.write_sep("=", "fuzzed cases")
    tr.write_line(f"{'test':60} {'cases':>7} {'results':>8} {'errors':>7} {'slowest s':>10}")
    for test in sorted(TALLY):
        t = TALLY[test]
        slow = f"{SLOWEST[test]:.2f}" if SLOWEST[test] else "-"
        tr.write_line(f"{test[:60]:60} {sum(t.values()):7d} {t['result']:8d} {t['error']:7d} {slow:>10}")
