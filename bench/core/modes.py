"""Running modules in evaluation mode for a while, with every submodule's own mode restored afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """``modules`` in eval mode (BatchNorm on running statistics, no dropout) inside the block.

    On exit each submodule gets back the mode it had, even where a model mixes modes.
    """
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training
