"""The sweep report: SWEEP_DIR/report/index.html, a static page (no server, no network) with the fixed
settings, the summary with intervals and directions, paired comparisons, an X/Y grid of thumbnails with
scores, one page per image, and for an Optuna search the trial history and parameter importances.

    python -m ideogram4.experiment.report SWEEP_DIR [--x KEY] [--y KEY]

``tables`` reads the summary CSVs, ``search`` the Optuna study, ``thumbs`` makes the thumbnails once,
``build`` renders the Jinja2 templates (``templates/``) beside a small sorting/filtering script (``static/``).
"""

REPORT_DIR = "report"
INDEX_HTML = "index.html"
