"""`python -m edgerobust`: the same as the `edgerobust` command."""
from .cli import main

main()
