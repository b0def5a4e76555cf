"""Research on top of both halves: sweeps, their points and plots, the recipes."""
