"""Allow `python -m wsolbench` (and `torchrun -m wsolbench`)."""

from wsolbench.cli import main

main()
