"""The internal module names documented in docs/modules.md exist, are the only ones, and all run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.modules import ModularGRU, ModularGRUCell, ModularLSTM, ModularLSTMCell

DOC = Path(__file__).resolve().parents[2] / "docs" / "modules.md"
ROW = re.compile(r"^\| `(?P<name>[\w.]+)` \| (?P<level>cell|layer) \| (?P<lstm>✓?) *\| (?P<gru>✓?) *\|")

# The old tool's LSTM cell names, which existing override rules and stats files use.
OLD_TOOL_LSTM_NAMES = {
    "fc_gate_x", "fc_gate_h", "eltwiseadd_gate", "act_i", "act_f", "act_g", "act_o",
    "eltwisemult_cell_forget", "eltwisemult_cell_input", "eltwiseadd_cell", "act_h", "eltwisemult_hidden",
}  # fmt: skip


def documented(kind: str, level: str) -> set[str]:
    """Names of the table rows for ``kind`` ('lstm' or 'gru') at ``level`` ('cell' or 'layer')."""
    rows = [m.groupdict() for m in map(ROW.match, DOC.read_text(encoding="utf-8").splitlines()) if m]
    return {r["name"] for r in rows if r["level"] == level and r[kind] == "✓"}


def expected_layer_names(kind: str, num_layers: int, bidirectional: bool) -> set[str]:
    names = set()
    cell_names = documented(kind, "cell")
    for name in documented(kind, "layer"):
        if name.startswith("cells_reverse") and not bidirectional:
            continue
        if ".N" not in name:
            names.add(name)
            continue
        for layer in range(num_layers):
            prefix = name.replace(".N", f".{layer}")
            names |= {prefix} | {f"{prefix}.{c}" for c in cell_names}
    return names


def test_table_has_the_old_tool_lstm_names_and_a_gru() -> None:
    assert documented("lstm", "cell") == OLD_TOOL_LSTM_NAMES
    assert len(documented("gru", "cell")) == 13
    assert {"cells", "cells.N", "cells_reverse", "cells_reverse.N", "dropout"} == documented("lstm", "layer")


@pytest.mark.parametrize("cls,kind", [(ModularLSTMCell, "lstm"), (ModularGRUCell, "gru")])
def test_cell_names_are_exactly_the_documented_ones(cls: type[nn.Module], kind: str) -> None:
    names = {name for name, _ in cls(3, 4).named_modules() if name}
    assert names == documented(kind, "cell")


@pytest.mark.parametrize("cls,kind", [(ModularLSTM, "lstm"), (ModularGRU, "gru")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_names_are_exactly_the_documented_ones(cls: type[nn.Module], kind: str, bidirectional: bool) -> None:
    names = {name for name, _ in cls(3, 4, num_layers=2, bidirectional=bidirectional).named_modules() if name}
    assert names == expected_layer_names(kind, 2, bidirectional)


def record_calls(model: nn.Module) -> dict[str, int]:
    """Forward-hook every leaf module; the returned dict counts calls per name."""
    calls = {name: 0 for name, m in model.named_modules() if name and not list(m.children())}

    def hook(name: str):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    for name in calls:
        model.get_submodule(name).register_forward_hook(hook(name))
    return calls


@pytest.mark.parametrize("cls", [ModularLSTM, ModularGRU])
def test_every_leaf_module_runs_and_the_input_projection_runs_once(cls: type[nn.Module]) -> None:
    steps = 5
    model = cls(3, 4, num_layers=2, bidirectional=True)
    calls = record_calls(model)
    model(torch.randn(steps, 2, 3))
    assert all(calls.values()), f"never called: {[n for n, c in calls.items() if not c]}"
    assert calls["cells.1.fc_gate_x"] == 1 and calls["cells_reverse.0.fc_gate_x"] == 1
    last_op = "eltwisemult_hidden" if cls is ModularLSTM else "eltwiseadd_hidden"
    assert calls["cells.1.fc_gate_h"] == steps and calls[f"cells_reverse.1.{last_op}"] == steps
    assert calls["dropout"] == 1


@pytest.mark.parametrize("cls", [ModularLSTMCell, ModularGRUCell])
def test_every_cell_module_runs(cls: type[nn.Module]) -> None:
    cell = cls(3, 4)
    calls = record_calls(cell)
    cell(torch.randn(2, 3))
    assert set(calls) == documented("lstm" if cls is ModularLSTMCell else "gru", "cell")
    assert all(count == 1 for count in calls.values()), calls
