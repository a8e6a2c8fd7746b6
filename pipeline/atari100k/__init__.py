"""Atari 100k: the 26-game suite, its published references and its report.

`python -m pipeline.atari100k` (`__main__`) runs games x seeds of one gin file through the
sweep's launchers (`suite`: the runs, the local and Slurm launches, the report job), keeps each
finished run's record in git (`records`), and writes the suite report (`report`, with
`suite_stats`, `suite_plots` and `suite_markdown`) against the published figures
(`references`). No module here imports TensorFlow: the trainer runs in child processes.
"""
