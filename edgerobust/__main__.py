"""`python -m edgerobust`: the same as the `edgerobust` command."""
from edgerobust.cli import main

main()
