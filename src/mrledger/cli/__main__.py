"""``python -m mrledger.cli``: the ``mrledger`` command without its console script (tests, a bare checkout)."""

from mrledger.cli.main import app

app()
