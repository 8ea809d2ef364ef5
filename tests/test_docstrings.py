"""Every docstring example in the package runs (examples needing the corpora are marked +SKIP)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import compress

MODULES = sorted(m.name for m in pkgutil.walk_packages(compress.__path__, "compress.") if m.name != "compress.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    torch.manual_seed(0)  # examples that build untrained models must not depend on earlier tests
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
