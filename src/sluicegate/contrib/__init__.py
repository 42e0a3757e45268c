"""Integrations with third-party libraries, one module each; each imports its library
only when used, and the core package imports none of them."""

from __future__ import annotations

import importlib
from typing import Any


def require(module: str, integration: str, extra: str) -> Any:
    """Import module for integration, or raise ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # the core package never needs it
        raise ImportError(f"sluicegate.contrib.{integration} needs {module} ({e}): "
                          f"pip install 'sluicegate[{extra}]'") from e
