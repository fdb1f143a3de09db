"""``python -m mrledger.anchoring …``: an alias of ``mrledger anchor …`` (mrledger/cli/anchoring.py), kept for the
scripts and deployments that start the worker this way. An entry point, not part of the anchoring layer: the one
module of ``mrledger.anchoring`` that imports the CLI (tests/test_layers.py exempts ``__main__`` modules).
"""

import sys

from mrledger.cli.main import app

if __name__ == "__main__":  # importing it (the recursion-limit test does) must not start a worker
    app(args=["anchor", *sys.argv[1:]], prog_name="python -m mrledger.anchoring")
