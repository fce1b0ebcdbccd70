"""Backdoor defenses, one module each, registered under their module name in ``DEFENSES``."""

from __future__ import annotations

import sys

from bench.core._discover import import_submodules

import_submodules(sys.modules[__name__])
