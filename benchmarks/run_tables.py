"""Shared command line and output of the diagnostic scripts that read trained run folders
(map_factors.py, trt_selection.py): checkpoints in, one table out."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def checkpoint_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every such script takes: checkpoints, --data-root, --markdown."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("results/data"),
                        help="synth: where the generated data lives (the workflow's "
                             "RESULTS/data); cub/ilsvrc: the dataset root the run read")
    parser.add_argument("--markdown", type=Path, default=None)
    return parser


def print_table(rows: list[dict], sort_by: list[str], markdown: Path | None) -> None:
    """Print the rows as a table (one decimal) and write them as markdown if asked."""
    table = pd.DataFrame(rows).sort_values(sort_by)
    print(table.to_string(index=False, float_format="%.1f"))
    if markdown:
        markdown.write_text(table.to_markdown(index=False, floatfmt=".1f") + "\n")
