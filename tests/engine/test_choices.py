"""ChoiceTable: a params field that picks a registered alternative by name, read at validation and schema time."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field, ValidationError

from mmflow.engine import ChoiceTable, Params, UsageError


class Fast(Params):
    """Goes fast."""

    name: Literal["fast"] = "fast"
    speed: int = Field(1, ge=0)


class Slow(Params):
    """Goes slow."""

    name: Literal["slow"] = "slow"


def table(group: str = "mmflow.test-none") -> ChoiceTable:
    found = ChoiceTable("gait", group)
    found.register("fast", Fast, legs=4)(object)
    return found


def errors(model: type[Params], value: object) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as raised:
        model(gait=value)
    return [(e["loc"], e["msg"]) for e in raised.value.errors()]


def test_a_name_or_a_mapping_validates_into_the_alternatives_params():
    gaits = table()

    class Walk(Params):
        gait: gaits.field() = Field(default_factory=Fast)

    assert Walk(gait="fast").gait == Fast() and Walk(gait={"name": "fast", "speed": 3}).gait == Fast(speed=3)
    assert Walk().model_dump() == {"gait": {"name": "fast", "speed": 1}}
    assert gaits.parse({"name": "fast", "speed": 2}) == Fast(speed=2) and gaits.of(Fast()).capabilities == {"legs": 4}
    assert errors(Walk, {"name": "fast", "speed": -1}) == [(("gait", "speed"),
                                                            "Input should be greater than or equal to 0")]
    assert errors(Walk, {"name": "fats"}) == [(("gait", "name"), "unknown gait 'fats' (did you mean 'fast'?); "
                                                                  "one of: fast")]
    assert errors(Walk, {"speed": 2}) == [(("gait",), "missing required parameter 'name' (it selects the gait; "
                                                       "one of: fast)")]
    assert errors(Walk, {"name": ["fast"]}) == [(("gait", "name"), "expected the gait's name (one of: fast), got "
                                                                    "['fast']")]
    assert errors(Walk, 3) == [(("gait",), "give the gait as its name or a mapping with `name:` (one of: fast)")]


def test_alternatives_registered_later_are_validated_and_offered_and_a_filter_says_why():
    gaits = table()

    class Walk(Params):
        gait: gaits.field() = Field(default_factory=Fast)

    class Quadruped(Params):
        gait: gaits.field(lambda c: c.capabilities.get("legs") == 4, "walks on two legs") = Field(default_factory=Fast)

    gaits.register("slow", Slow, legs=2)(object)  # after both models were built
    assert Walk(gait="slow").gait == Slow()
    assert errors(Quadruped, "slow") == [(("gait",), "gait 'slow' walks on two legs; one of: fast")]
    options = Walk.model_json_schema()["properties"]["gait"]["oneOf"]
    assert options[0] == {"enum": ["fast", "slow"], "type": "string"} and len(options) == 3
    class Amble:  # another module's
        pass

    with pytest.raises(UsageError, match=f"^gait 'slow' is registered twice: by builtins and by {__name__}$"):
        gaits.register("slow", Slow)(Amble)


def test_a_broken_plugin_names_itself(install_plugin):
    install_plugin("broken_gait", "raise RuntimeError('no legs')", "mmflow.test-gaits", "trot = broken_gait")
    with pytest.raises(UsageError, match=r"^cannot load mmflow gait plugin 'trot' \(broken_gait\): "
                                         r"RuntimeError: no legs$"):
        table("mmflow.test-gaits").choices()
