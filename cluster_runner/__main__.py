"""``python -m cluster_runner`` is the ``runner`` command."""

from cluster_runner.cli import main

main()
