"""`python -m edgerobust` and the `edgerobust` command (pyproject's entry point: :func:`run`)."""
import sys


def run() -> None:
    """The CLI. A Ctrl-C while it loads, before it can say so itself, is one line and exit 130
    rather than a traceback of whichever import it landed in."""
    try:
        from edgerobust.cli import main
    except KeyboardInterrupt:
        print("interrupted: edgerobust stopped by Ctrl-C while starting. Nothing was written.", file=sys.stderr)
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
