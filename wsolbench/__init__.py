"""wsolbench: one protocol for weakly supervised object localization.

Importing the package is cheap: nothing here imports torch, so `wsolbench list` and the
registry stay fast. The data flow is

    dataset -> method -> raw maps -> postprocess -> protocol -> results JSON -> MLflow / tables
"""

__version__ = "0.1.0"
