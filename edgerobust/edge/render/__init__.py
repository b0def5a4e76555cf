"""Rendering: the report (JSON, Markdown, terminal), report.html and its SVG figures, the tables, the headline, the speed lines, the variant table and compare's pages. Torch-free."""
