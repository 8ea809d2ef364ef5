"""The ``Example:`` blocks in compress.quant docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import compress.quant

MODULES = sorted(m.name for m in pkgutil.walk_packages(compress.quant.__path__, "compress.quant.") if not m.ispkg)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing_stats="warn" example warns on purpose
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
