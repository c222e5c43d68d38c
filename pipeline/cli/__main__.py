"""``python -m pipeline.cli``: the same app as the ``hgn-pipeline`` script."""

from pipeline.cli import app

if __name__ == "__main__":  # importing the module (tools that walk packages) runs nothing
    app()
