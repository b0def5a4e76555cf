"""`python -m edgerobust` and the `edgerobust` command (pyproject's entry point: :func:`run`)."""
import signal
import sys


def run() -> None:
    """The CLI. A Ctrl-C while it loads, before it can say so itself, is one line and exit 130
    rather than a traceback of whichever import it landed in; one after the command has ended (while
    the interpreter shuts down) changes nothing: the command's own exit status stands."""
    try:
        from edgerobust.cli import main
    except KeyboardInterrupt:
        print("interrupted: edgerobust stopped by Ctrl-C while starting. Nothing was written.", file=sys.stderr)
        raise SystemExit(130) from None
    try:
        main()
    finally:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: Python's own handling stays
            pass


if __name__ == "__main__":
    run()
