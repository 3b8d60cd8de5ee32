"""`python -m sever.cli` runs the CLI, as `python -m sever` does."""

from sever.cli import main

main()
