"""The Registry class, and a check that runs over every registered component of every kind."""

from __future__ import annotations

import jsonschema
import pytest

from compress.errors import RegistryError
from compress.registry import REGISTRIES, Registry


def test_register_get_and_list() -> None:
    reg = Registry("widget")

    @reg.register("blue", description="A blue widget.")
    def blue() -> str:
        return "blue"

    assert reg.get("blue").obj() == "blue"
    assert reg.names() == ["blue"] and "blue" in reg and len(reg) == 1
    assert reg.get("blue").description == "A blue widget."


def test_duplicate_name_is_an_error() -> None:
    reg = Registry("widget")
    reg.add("a", object())
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", object())


def test_unknown_name_lists_registered_and_suggests() -> None:
    reg = Registry("widget")
    reg.add("post_train_linear", object())
    reg.add("cast", object())
    with pytest.raises(RegistryError) as err:
        reg.get("post_train_linaer")
    assert "Did you mean 'post_train_linear'" in str(err.value)
    assert "cast, post_train_linear" in str(err.value)


ALL_ENTRIES = [(kind, e) for kind, reg in REGISTRIES.items() for e in reg]


@pytest.mark.parametrize("kind,entry", ALL_ENTRIES, ids=[f"{k}:{e.name}" for k, e in ALL_ENTRIES])
def test_every_component_declares_a_strict_valid_schema(kind: str, entry: object) -> None:
    schema = entry.schema  # type: ignore[attr-defined]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("type") == "object"
    assert schema.get("additionalProperties") is False, "args schemas must reject unknown keys"
    assert entry.description, "every component needs a one-line description for --list"  # type: ignore[attr-defined]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"surely_not_a_parameter": 1}, schema)


def test_a_value_that_is_not_a_name_is_not_registered() -> None:
    from compress.registry import REGISTRIES

    for value in ([], {}, None, 3, ("perplexity",)):
        assert value not in REGISTRIES["evaluators"]
    assert "perplexity" in REGISTRIES["evaluators"]
