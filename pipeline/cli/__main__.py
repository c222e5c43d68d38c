"""``python -m pipeline.cli``: the same app as the ``hgn-pipeline`` script."""

from pipeline.cli import app

app()
