"""Every kind of bad workflow is reported as FILE:LINE: path: message, all at once, exit 2."""

from __future__ import annotations

import pytest

from mmflow.components.balance.base import METHODS
from mmflow.engine import WorkflowError, load_workflow

GOOD = """
name: small
steps:
  data:
    component: data.synthetic
    params:
      num_classes: 3
  shard:
    component: data.shard
    inputs:
      dataset: ${steps.data.outputs.dataset}
  train:
    component: train.classifier
    inputs:
      train: ${steps.shard.outputs.train}
    params:
      lr: 0.1
"""


def problems_of(path, *overrides) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, list(overrides))
    return [str(p) for p in info.value.problems]


def test_good_workflow_validates_and_orders_steps(write_workflow):
    wf = load_workflow(write_workflow(GOOD))
    assert wf.order == ["data", "shard", "train"]
    assert wf.steps["train"].params.lr == 0.1
    assert str(wf.steps["train"].inputs["train"]) == "${steps.shard.outputs.train}"


def test_unknown_component_suggests_the_closest(write_workflow):
    path = write_workflow(GOOD.replace("component: data.shard", "component: data.shrad"))
    assert problems_of(path) == [
        f"{path}:8: steps.shard.component: unknown component 'data.shrad' (did you mean 'data.shard'?)"
    ]


def test_unknown_parameter_suggests_the_closest(write_workflow):
    path = write_workflow(GOOD.replace("lr: 0.1", "lrr: 0.1"))
    assert problems_of(path) == [f"{path}:16: steps.train.params.lrr: unknown parameter 'lrr' (did you mean 'lr'?)"]


def test_missing_required_parameter(write_workflow):
    path = write_workflow(GOOD.replace("      num_classes: 3", "      num_classes: 3\n      modalities:\n        - {dim: 4}"))
    assert problems_of(path) == [f"{path}:8: steps.data.params.modalities[0]: missing required parameter 'name'"]


def test_wrong_type(write_workflow):
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: fast"))
    assert problems_of(path) == [
        f"{path}:16: steps.train.params.lr: Input should be a valid number, unable to parse string as a number (got 'fast')"
    ]


def test_out_of_range(write_workflow):
    path = write_workflow(GOOD.replace("num_classes: 3", "num_classes: 1"))
    assert problems_of(path) == [
        f"{path}:6: steps.data.params.num_classes: Input should be greater than or equal to 2 (got 1)"
    ]


def test_unknown_top_level_field_and_resources_field(write_workflow):
    path = write_workflow("nmae: x\n" + GOOD.replace("name: small", "name: small\nresources: {wokers: 2}"))
    assert problems_of(path) == [
        f"{path}:1: nmae: unknown field 'nmae' (did you mean 'name'?)",
        f"{path}:4: resources.wokers: unknown field 'wokers' (did you mean 'workers'?)",
    ]


def test_reference_to_unknown_step(write_workflow):
    path = write_workflow(GOOD.replace("${steps.shard.outputs.train}", "${steps.shrd.outputs.train}"))
    assert problems_of(path) == [
        f"{path}:14: steps.train.inputs.train: unknown step 'shrd' (did you mean 'shard'?)"
    ]


def test_reference_to_unknown_output(write_workflow):
    path = write_workflow(GOOD.replace("${steps.shard.outputs.train}", "${steps.shard.outputs.trian}"))
    assert problems_of(path) == [
        f"{path}:14: steps.train.inputs.train: step 'shard' (data.shard) has no output 'trian' (did you mean 'train'?)"
    ]


def test_type_mismatch_between_output_and_input(write_workflow):
    path = write_workflow(GOOD.replace("${steps.shard.outputs.train}", "${steps.data.outputs.dataset}"))
    assert problems_of(path) == [
        f"{path}:14: steps.train.inputs.train: type mismatch: 'data.dataset' is 'dataset' but input "
        "'train' of train.classifier expects 'shards'"
    ]


def test_malformed_reference_and_missing_input(write_workflow):
    path = write_workflow(GOOD.replace("${steps.shard.outputs.train}", "shard.train").replace(
        "    inputs:\n      dataset: ${steps.data.outputs.dataset}\n", ""))
    found = problems_of(path)
    assert found[0].startswith(f"{path}:7: steps.shard: missing input 'dataset' (expects 'dataset'")
    assert found[1].startswith(f"{path}:12: steps.train.inputs.train: expected a reference like")


def test_cycle_is_reported_with_its_path(write_workflow):
    path = write_workflow("""
        name: loop
        steps:
          a:
            component: test.passthrough
            inputs: {source: "${steps.b.outputs.copy}"}
          b:
            component: test.passthrough
            inputs: {source: "${steps.a.outputs.copy}"}
    """)
    found = problems_of(path)
    assert any("cycle: " in p and ("a -> b -> a" in p or "b -> a -> b" in p) for p in found), found


def test_duplicate_step_names(write_workflow):
    path = write_workflow(GOOD + "  data:\n    component: data.synthetic\n")
    assert problems_of(path) == [f"{path}:17: steps.data: duplicate key 'data' (first defined at line 3)"]


@pytest.mark.parametrize("text, line", [("name: x\nsteps: [a\n", 3), ("name: x\n  bad: indent\n", 2), ("a: b: c\n", 1)])
def test_malformed_yaml(write_workflow, text, line):
    path = write_workflow(text)
    found = problems_of(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:{line}: malformed YAML:")


def test_all_problems_are_reported_at_once(write_workflow):
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: -1").replace("num_classes: 3", "num_classes: x")
                          .replace("data.shard", "data.shrd"))
    assert len(problems_of(path)) == 3


def test_set_overrides_a_value_and_is_validated(write_workflow):
    path = write_workflow(GOOD)
    wf = load_workflow(path, ["steps.train.params.lr=0.5", "seed=7"])
    assert wf.steps["train"].params.lr == 0.5 and wf.spec.seed == 7
    assert problems_of(path, "steps.train.params.lr=-2") == [
        f"{path} (--set steps.train.params.lr=-2): steps.train.params.lr: Input should be greater than 0 (got -2)"
    ]


def test_cli_exits_2_with_one_line_per_problem_and_no_traceback(write_workflow, cli):
    path = write_workflow(GOOD.replace("lr: 0.1", "lrr: 0.1").replace("data.shard", "data.shrd"))
    status, out, err = cli("validate", path)
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        f"{path}:8: steps.shard.component: unknown component 'data.shrd' (did you mean 'data.shard'?)",
        f"{path}:16: steps.train.params.lrr: unknown parameter 'lrr' (did you mean 'lr'?)",
    ]
    assert "Traceback" not in err


def test_cli_validate_ok_and_graph(write_workflow, cli):
    path = write_workflow(GOOD)
    assert cli("validate", path)[0] == 0
    status, out, _ = cli("graph", path, "--format", "mermaid")
    assert status == 0 and "shard -->|train| train" in out and out.startswith("flowchart LR")


def test_missing_file_and_bad_set_syntax_exit_2(cli, tmp_path, write_workflow):
    status, _, err = cli("validate", tmp_path / "nope.yaml")
    assert status == 2 and "cannot read file" in err
    status, _, err = cli("validate", write_workflow(GOOD), "--set", "noequals")
    assert status == 2 and "expected PATH=VALUE" in err


def test_union_typed_value_gets_one_line_without_member_tags(write_workflow):
    path = write_workflow(GOOD.replace("num_classes: 3", "num_classes: 3\n      modalities: [{name: a, signal: abc}]"))
    assert problems_of(path) == [
        f"{path}:7: steps.data.params.modalities[0].signal: Input should be a valid number, unable to parse "
        "string as a number (got 'abc'); or Input should be a valid list (got 'abc')"
    ]


def test_non_mapping_values_are_named_plainly(write_workflow):
    path = write_workflow("name: x\nsteps:\n  a: 3\n  b:\n    component: data.synthetic\n    params: [1]\n")
    assert problems_of(path) == [f"{path}:3: steps.a: expected a mapping (got 3)",
                                 f"{path}:6: steps.b.params: expected a mapping (got [1])"]


def test_method_blocks_are_checked_by_kind(write_workflow):
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: 0.1\n      method: {name: pmr, alpah: 2}"))
    assert problems_of(path) == [
        f"{path}:17: steps.train.params.method.alpah: unknown parameter 'alpah' (did you mean 'alpha'?)"]
    every = ", ".join(sorted(c.name for c in METHODS.choices()))  # the built-in methods, and only those
    assert {"naive", "pmr", "ogm_ge"} <= set(every.split(", "))
    assert all(c.target.__module__.startswith("mmflow.components.balance.methods.") for c in METHODS.choices())
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: 0.1\n      method:\n        name: pmrr"))
    assert problems_of(path) == [
        f"{path}:18: steps.train.params.method.name: unknown method 'pmrr' (did you mean 'pmr'?); one of: {every}"]
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: 0.1\n      method: {alpha: 2}"))
    assert problems_of(path) == [
        f"{path}:17: steps.train.params.method: missing required parameter 'name' (it selects the method; one of: "
        f"{every})"]
    path = write_workflow(GOOD.replace("lr: 0.1", "lr: 0.1\n      method: {name: pmr, start_epoch: 5, end_epoch: 2}"))
    assert problems_of(path) == [
        f"{path}:17: steps.train.params.method: end_epoch 2 is before start_epoch 5"]


def test_an_optional_input_may_stay_unwired_and_wiring_rules_are_located(cli, write_workflow, tmp_path):
    base = """
    name: greet
    steps:
      name: {component: test.text, params: {text: ada}}
      greet:
        component: test.greet
        params: {shout: false}
    """
    status, out, err = cli("run", write_workflow(base), "--run-dir", tmp_path / "a", "--runs-root", tmp_path)
    assert status == 0, err
    assert (tmp_path / "a" / "greet" / "outputs" / "greeting").read_text() == "hello world"
    wired = base.rstrip() + "\n        inputs: {name: \"${steps.name.outputs.copy}\"}\n"
    status, out, err = cli("run", write_workflow(wired), "--run-dir", tmp_path / "b", "--runs-root", tmp_path)
    assert status == 0, err
    assert (tmp_path / "b" / "greet" / "outputs" / "greeting").read_text() == "hello ada"
    path = write_workflow(base.replace("shout: false", "shout: true"))
    assert problems_of(path) == [f"{path}:6: steps.greet.params.shout: shouting needs a name: wire inputs.name"]
    path = write_workflow(wired.replace("outputs.copy", "outputs.cpy"))
    assert "has no output 'cpy'" in problems_of(path)[0]


def test_mistakes_at_every_level_are_reported_in_one_pass_each_once(write_workflow):
    path = write_workflow("""
        name: multi
        seeed: 3
        resources: {workers: 0}
        steps:
          data:
            component: data.synthetik
            params: {num_classes: 6}
          shard:
            component: data.shard
            inputs: {dataset: "${steps.data.outputs.dataset}"}
            params: {samples_per_shard: -4}
          train:
            component: train.classifier
            inputs: {train: "${steps.shrd.outputs.train}"}
            params: {epochs: -1, optimizer: sgdd}
          eval:
            component: eval.classifier
            inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
                     test: "${steps.shard.outputs.tset}"}
        sweep:
          parameters:
            steps.train.params.lr: {grid: [0.1, -1]}
          metric: eval.accuracy
        """)
    assert problems_of(path) == [
        f"{path}:2: seeed: unknown field 'seeed' (did you mean 'seed'?)",
        f"{path}:3: resources.workers: Input should be greater than or equal to 1 (got 0)",
        f"{path}:6: steps.data.component: unknown component 'data.synthetik' (did you mean 'data.synthetic'?)",
        f"{path}:11: steps.shard.params.samples_per_shard: Input should be greater than or equal to 1 (got -4)",
        f"{path}:14: steps.train.inputs.train: unknown step 'shrd' (did you mean 'shard'?)",
        f"{path}:15: steps.train.params.optimizer: Input should be 'sgd', 'adam' or 'adagrad' (got 'sgdd')",
        f"{path}:15: steps.train.params.epochs: Input should be greater than or equal to 1 (got -1)",
        f"{path}:19: steps.eval.inputs.test: step 'shard' (data.shard) has no output 'tset' (did you mean 'test'?)",
        f"{path}:22: sweep.parameters.steps.train.params.lr.grid[1]: value -1: lr: Input should be greater than 0",
    ]


def test_a_step_keyed_by_null_is_a_problem_at_its_line_not_a_traceback(write_workflow, cli):
    """`&anchor:` names an anchor on a null key (a fuzzed workflow found it): the did-you-mean of an unknown step
    must skip it."""
    path = write_workflow("""
        name: w
        steps:
          data: {component: test.text}
          &x:
            component: test.text
          copy:
            component: test.passthrough
            inputs: {source: "${steps.dta.outputs.copy}"}
        """)
    status, _, err = cli("validate", path)
    assert status == 2 and "Traceback" not in err
    assert f"{path}:2: steps.None: step name 'None' must be letters, digits, '_' or '-'" in err
    assert f"{path}:8: steps.copy.inputs.source: unknown step 'dta' (did you mean 'data'?)" in err
