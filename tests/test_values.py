"""Step values in and out: pydantic models are dumped as JSON data and validated back."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel

from workkit_workflow.definitions._values import to_data, validate
from workkit_workflow.errors import SerializationError


class Order(BaseModel):
    order_id: str
    placed: date
    total: float = 0.0


def test_a_model_instance_is_dumped_in_json_mode() -> None:
    assert to_data(Order(order_id="o1", placed=date(2026, 1, 2))) == {
        "order_id": "o1",
        "placed": "2026-01-02",  # JSON mode: a string, not a date
        "total": 0.0,
    }


@pytest.mark.parametrize("value", [None, 3, "x", [1, {"a": 2}], {"k": date(2026, 1, 2)}, Order])
def test_anything_else_passes_through_untouched(value: Any) -> None:
    assert to_data(value) is value


def test_an_object_whose_model_dump_is_not_callable_passes_through() -> None:
    class Odd:
        model_dump = "not a method"

    odd = Odd()
    assert to_data(odd) is odd


def test_no_declared_type_returns_the_data_itself() -> None:
    data = {"order_id": 1}
    assert validate(None, data, what="input") is data


def test_a_model_type_validates_data_into_an_instance() -> None:
    order = validate(Order, {"order_id": "o1", "placed": "2026-01-02"}, what="input")
    assert order == Order(order_id="o1", placed=date(2026, 1, 2))


def test_any_other_annotated_type_is_validated_by_pydantic() -> None:
    assert validate(list[int], ["1", 2], what="output") == [1, 2]
    assert validate(dict[str, date], {"d": "2026-01-02"}, what="output") == {"d": date(2026, 1, 2)}


def test_a_mismatch_is_a_serialization_error_naming_what_and_the_type() -> None:
    with pytest.raises(SerializationError) as caught:
        validate(Order, {"order_id": "o1"}, what="input of 'charge'")
    message = caught.value.message
    assert message.startswith("input of 'charge' does not match Order: ")
    assert "placed" in message  # pydantic's own description of what is wrong follows
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_mismatch_on_a_plain_type_names_the_type() -> None:
    with pytest.raises(SerializationError) as caught:
        validate(int, "not a number", what="output")
    assert caught.value.message.startswith("output does not match int: ")


def test_a_mismatch_on_a_nameless_validator_shows_the_validator() -> None:
    class Rule:
        def model_validate(self, data: Any) -> Any:
            raise ValueError("too small")

        def __str__(self) -> str:
            return "rule min=3"

    with pytest.raises(SerializationError) as caught:
        validate(Rule(), 1, what="output")
    assert caught.value.message == "output does not match rule min=3: too small"


def test_an_import_error_while_validating_is_not_disguised() -> None:
    class NeedsAModule:
        @classmethod
        def model_validate(cls, data: Any) -> Any:
            raise ImportError("no module named 'pydantic_core'")

    with pytest.raises(ImportError):
        validate(NeedsAModule, {}, what="input")


def test_any_error_of_a_custom_validator_becomes_a_serialization_error() -> None:
    class Strict:
        @classmethod
        def model_validate(cls, data: Any) -> Any:
            raise KeyError("total")

    with pytest.raises(SerializationError) as caught:
        validate(Strict, {}, what="output")
    assert caught.value.message == "output does not match Strict: 'total'"


class Unshowable:
    """Duck-typed like a pydantic model whose dump fails."""

    def model_dump(self, mode: str) -> Any:
        raise ValueError(f"cannot show in {mode} mode")


def test_a_model_that_cannot_be_dumped_is_a_serialization_error_naming_it() -> None:
    with pytest.raises(SerializationError) as caught:
        to_data(Unshowable(), what="output of step 'a'")
    assert caught.value.details == {"what": "output of step 'a'", "type": "Unshowable"}
    message = caught.value.message
    assert message.startswith("output of step 'a' (Unshowable) ")
    assert message.endswith(": cannot show in json mode")
    with pytest.raises(SerializationError) as unnamed:
        to_data(Unshowable())
    assert unnamed.value.details["what"] == "value"
