"""``python -m hyptest`` runs the command line."""

from .cli import app

app()
