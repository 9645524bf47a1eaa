"""Datasets: readers for the real on-disk formats and the embedded synthetic generators.

Nothing in this package imports torch except `torch_dataset`, which wraps records for
training; readers return plain `Record`s so that protocols and tests stay light.
"""

from wsolbench.data.records import Record, WSOLData, check_split

__all__ = ["Record", "WSOLData", "check_split"]
