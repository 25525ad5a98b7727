"""Sweep summaries: `settings` groups the job folders, `table` writes the CSVs with prompt-clustered
intervals (`intervals`), `plot` draws summary.png; `python -m ideogram4.experiment.summary SWEEP_DIR` runs it."""
