"""After a run of the fuzzers: how many cases each test fed and what they came to (a result or the
project's own error; for the crash test, SIGKILL, SIGINT or finished first), and its slowest case
(the figures docs/architecture.md quotes)."""


def pytest_terminal_summary(terminalreporter):
    from fuzzkit import SLOWEST, TALLY

    if not TALLY:
        return
    tr = terminalreporter
    tr.write_sep("=", "fuzzed cases")
    for test in sorted(TALLY):
        t = TALLY[test]
        what = ", ".join(f"{n} {k}" for k, n in sorted(t.items()))
        slow = f"; slowest {SLOWEST[test]:.2f} s" if SLOWEST[test] else ""
        tr.write_line(f"{test}: {sum(t.values())} cases ({what}){slow}")
