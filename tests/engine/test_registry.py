"""Registry rules, the JSON Schema of workflow files, and the torch-free validate path."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from mmflow.engine import Params, UsageError, component
from mmflow.engine.registry import REGISTRY
from mmflow.engine.schema import workflow_schema

from ..conftest import REPO

SHIPPED = sorted((REPO / "workflows").glob("*.yaml"))


def test_builtins_are_found_through_the_entry_point():
    assert {"data.synthetic", "data.shard", "train.classifier", "eval.classifier"} <= set(REGISTRY.names())


def test_a_second_component_with_the_same_name_is_refused():
    with pytest.raises(UsageError, match="registered twice"):
        @component("test.text")
        def other(ctx, params):  # noqa: ARG001
            return {}


def test_component_declarations_are_checked():
    with pytest.raises(ValueError, match="area.name"):
        component("NoDots")
    with pytest.raises(TypeError, match="forbid extra"):
        from pydantic import BaseModel
        component("test.loose", params=BaseModel)
    with pytest.raises(ValueError, match="snake_case"):
        component("test.io", inputs={"Bad-Name": "x"})
    assert Params.model_config["extra"] == "forbid"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_schema_accepts_the_shipped_workflows(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), workflow_schema())


def test_schema_discriminates_params_by_component():
    schema = workflow_schema()
    quick = yaml.safe_load((REPO / "workflows" / "quickstart.yaml").read_text())
    quick["steps"]["train"]["params"]["lr"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(quick, schema)
    quick["steps"]["train"]["params"] = {"samples_per_shard": 3}  # a data.shard param on train.classifier
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(quick, schema)
    mapping = schema["properties"]["steps"]["additionalProperties"]["discriminator"]["mapping"]
    assert {"data.synthetic", "train.classifier"} <= set(mapping)


def test_schema_leaves_optional_inputs_out_and_requires_the_rest():
    schema = workflow_schema()
    inputs = schema["$defs"]["Inputs_test_join"]
    assert inputs["required"] == ["parts"] and set(inputs["properties"]) == {"parts", "extra"}
    greet = schema["$defs"]["Step_test_greet"]  # every input optional: the inputs block may be left out
    assert "inputs" not in greet.get("required", [])
    assert "inputs" in schema["$defs"]["Step_test_join"]["required"]


def test_validate_schema_and_components_never_import_torch_or_ray():
    probe = (
        "import sys; from mmflow.engine.cli import main; "
        f"main(['validate', {str(REPO / 'workflows' / 'quickstart.yaml')!r}]); "
        "main(['schema', '-o', '/dev/null']); main(['components', '--json']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'numpy', 'webdataset')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_schema_and_components(cli, tmp_path):
    status, _, _ = cli("schema", "-o", tmp_path / "schema.json")
    assert status == 0 and json.loads((tmp_path / "schema.json").read_text())["title"] == "mmflow workflow"
    status, out, _ = cli("components")
    assert status == 0 and "train.classifier" in out and "lr: float (default 0.05)" in out
    status, _, err = cli("components", "train.clasifier")
    assert status == 2 and "did you mean 'train.classifier'" in err


def test_components_show_the_fields_of_nested_params_models(cli):
    status, out, _ = cli("components", "data.synthetic")
    assert status == 0 and "modalities: list[ModalitySpec]" in out
    assert "\n        informative: int | None (default None)" in out  # a field of each modality, indented under it
    status, out, _ = cli("components", "data.synthetic", "--json")
    modalities = next(p for p in json.loads(out)[0]["params"] if p["name"] == "modalities")
    assert [f["name"] for f in modalities["fields"]] == ["name", "dim", "signal", "noise", "informative"]
