"""Learning curves and an aggregate table for runs grouped into settings (`python -m
pipeline.report`): `stats` (settings, curves, IQM), `tables` (rows, baselines, references,
Markdown and CSV), `plot` (the figure), `build` (the whole report, then its files)."""
