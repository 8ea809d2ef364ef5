"""The committed schema file is the composed schema of the built-in components, and it is valid."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema

from compress.schema import composed_schema
from tests.conftest import ROOT

SCHEMA_FILE = ROOT / "schemas" / "schedule.schema.json"


def test_committed_schema_is_in_sync() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == composed_schema(builtin_only=True), (
        "schemas/schedule.schema.json is stale: regenerate it with "
        "python -c 'import json, compress.components; from compress.schema import composed_schema; "
        "print(json.dumps(composed_schema(True), indent=2))' > schemas/schedule.schema.json"
    )


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(composed_schema())


def test_cli_prints_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "compress", "--schema"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["title"] == "compress schedule"
