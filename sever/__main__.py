"""`python -m sever` (and `torchrun -m sever`) runs the CLI."""

from sever.cli import main

main()
