"""The journal's keys and versioned JSON codec: exact bytes, round trips, size limits,
refused records, and how step errors are journaled."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workkit_workflow.definitions._json import decoded
from workkit_workflow.engine._journal import (
    MAX_VALUE_BYTES,
    OP_VERSION,
    VERSION,
    JournalFormatError,
    check_size,
    decode_record,
    dumps,
    encode_record,
    encode_value,
    is_retryable,
    loads,
    op_key,
    op_of,
    seq_key,
    serialize_error,
)
from workkit_workflow.errors import NonRetryableError, SerializationError, StepTimeoutError


def test_keys_are_zero_padded_so_storage_lists_them_in_order() -> None:
    assert op_key("j:", 7) == "j:00000007"
    assert op_key("c:", 12345678) == "c:12345678"
    assert seq_key("e:", 42) == "e:000000000042"
    keys = [op_key("j:", n) for n in (10, 9, 100, 1)]
    assert sorted(keys) == [op_key("j:", n) for n in (1, 9, 10, 100)]


def test_op_of_reads_the_number_back() -> None:
    assert op_of("j:00000007") == 7
    assert op_of(op_key("c:", 31)) == 31


def test_dumps_is_compact_deterministic_and_keeps_unicode() -> None:
    assert dumps({"a": [1, 2.5, None, True], "b": "é✓"}) == '{"a":[1,2.5,null,true],"b":"é✓"}'
    assert loads('{"a":[1,2.5,null,true]}') == {"a": [1, 2.5, None, True]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_not_serialized(value: float) -> None:
    with pytest.raises(SerializationError) as caught:
        encode_value({"x": value}, what="step output")
    assert caught.value.details["what"] == "step output"
    assert caught.value.details["type"] == "dict"


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", {(1, 2): 3}])
def test_non_json_values_are_a_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError) as caught:
        encode_value(value, what="input")
    assert "input" in caught.value.message
    assert caught.value.details == {"what": "input", "type": type(value).__name__}


def test_too_deep_values_are_a_serialization_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError):
        encode_value(deep, what="output")


@pytest.mark.parametrize(
    "value", [None, 0, -3, 1.25, "", "text ✓", [], {}, {"nested": [{"a": None}, [1, "2"]]}, [True, False]]
)
def test_values_round_trip(value: Any) -> None:
    assert loads(encode_value(value, what="output")) == value


def test_a_record_gets_the_version_first_and_round_trips() -> None:
    text = encode_record("e:000000000001", {"type": "go", "payload": {"x": "é"}}, what="event")
    assert text == '{"v":1,"type":"go","payload":{"x":"é"}}'
    assert decode_record("e:000000000001", text) == {"v": VERSION, "type": "go", "payload": {"x": "é"}}


def test_an_operation_entry_is_version_2_and_decodes_to_the_version_1_shape() -> None:
    compact = {"kind": "step", "name": "a", "status": "completed", "attempt": 1, "started_at": 5.0}
    text = encode_record("j:00000007", {**compact, "finished_at": 6.0, "output": 1}, what="entry")
    assert text == '{"v":2,"kind":"step","name":"a","status":"completed","attempt":1,"started_at":5.0,' + (
        '"finished_at":6.0,"output":1}'
    )
    assert decode_record("j:00000007", text) == {
        "v": OP_VERSION,
        "op": 7,
        **compact,
        "attempt_started_at": 5.0,
        "failures": 0,
        "lost": 0,
        "errors": [],
        "error": None,
        "finished_at": 6.0,
        "output": 1,
    }


def test_a_version_2_entry_keeps_the_fields_it_has_and_only_steps_get_step_defaults() -> None:
    retried = '{"v":2,"kind":"step","name":"a","status":"retrying","attempt":2,"started_at":1.0,' + (
        '"attempt_started_at":3.0,"failures":1,"errors":[{"code":"E"}],"error":{"code":"E"}}'
    )
    entry = decode_record("c:00000002", retried)
    assert (entry["op"], entry["attempt_started_at"], entry["failures"], entry["lost"]) == (2, 3.0, 1, 0)
    assert entry["errors"] == [{"code": "E"}] and entry["error"] == {"code": "E"}
    sleep = decode_record("j:00000003", '{"v":2,"kind":"sleep","name":"s","status":"sleeping","wake_at":9.0}')
    assert sleep == {"v": 2, "op": 3, "kind": "sleep", "name": "s", "status": "sleeping", "wake_at": 9.0}


def test_version_2_is_only_for_operation_entries() -> None:
    for key in ("meta", "state", "result", "e:000000000001", "i:sha256:00"):
        with pytest.raises(JournalFormatError, match="journal version 2"):
            decode_record(key, '{"v":2}')
        assert encode_record(key, {"x": 1}, what="record").startswith('{"v":1,')


def test_a_record_that_has_a_version_is_written_as_it_is() -> None:
    assert encode_record("state", {"status": "running", "v": 1}, what="state") == '{"status":"running","v":1}'


def test_the_size_limit_counts_the_key_and_utf8_bytes() -> None:
    check_size("k", "x" * 9, what="value", limit=10)  # exactly at the limit is fine
    with pytest.raises(SerializationError) as caught:
        check_size("kk", "x" * 9, what="value", limit=10)
    assert caught.value.details == {"what": "value", "size": 11, "limit": 10}
    assert "11 bytes" in caught.value.message and "10 bytes" in caught.value.message
    with pytest.raises(SerializationError) as wide:
        check_size("k", "é" * 5, what="value", limit=10)  # 1 + 10 bytes, though 6 characters
    assert wide.value.details["size"] == 11
    check_size("é", "x" * 8, what="value", limit=10)


def test_the_default_limit_is_two_million_bytes() -> None:
    assert MAX_VALUE_BYTES == 2_000_000
    check_size("", "x" * MAX_VALUE_BYTES, what="value")
    with pytest.raises(SerializationError):
        check_size("k", "x" * MAX_VALUE_BYTES, what="value")


def test_encode_record_refuses_a_record_over_the_limit() -> None:
    key = "j:00000001"
    overhead = len(encode_record(key, {"output": ""}, what="entry")) + len(key)
    encode_record(key, {"output": "x" * (MAX_VALUE_BYTES - overhead)}, what="entry")
    with pytest.raises(SerializationError) as caught:
        encode_record(key, {"output": "x" * (MAX_VALUE_BYTES - overhead + 1)}, what="output of step 'a'")
    assert caught.value.details["size"] == MAX_VALUE_BYTES + 1
    assert caught.value.details["what"] == "output of step 'a'"


def test_encode_record_names_what_could_not_be_serialized() -> None:
    with pytest.raises(SerializationError) as caught:
        encode_record("j:00000001", {"output": {1, 2}}, what="output of step 'a'")
    assert caught.value.details["what"] == "output of step 'a'"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "not JSON text"),
        (b'{"v":1}', "not JSON text"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"v"', "not a JSON object"),
        ('{"v": 3}', "journal version 3"),
        ('{"op": 1}', "journal version None"),
        ('{"v": "1"}', "journal version '1'"),
    ],
)
def test_undecodable_records_are_a_journal_format_error(text: Any, why: str) -> None:
    with pytest.raises(JournalFormatError) as caught:
        decode_record("j:00000003", text)
    assert why in caught.value.message and "'j:00000003'" in caught.value.message
    assert caught.value.details["key"] == "j:00000003"
    assert caught.value.code == "journal_format" and caught.value.retryable is False


def test_a_wrong_version_is_reported_with_the_version_read() -> None:
    with pytest.raises(JournalFormatError) as caught:
        decode_record("state", '{"v": 7}')
    assert caught.value.details == {"key": "state", "version": 7}
    assert "reads version 1" in caught.value.message


def test_a_deeply_nested_record_is_a_journal_format_error() -> None:
    with pytest.raises(JournalFormatError):
        decode_record("state", "[" * 100_000 + "]" * 100_000)


def test_serialize_error_journals_code_message_type_and_timing() -> None:
    entry = serialize_error(
        ConnectionError("upstream 503"), attempt=2, started_at=10.0, finished_at=10.2505, retryable=True
    )
    assert entry == {
        "code": "ConnectionError",
        "message": "upstream 503",
        "type": "ConnectionError",
        "retryable": True,
        "attempt": 2,
        "started_at": 10.0,
        "finished_at": 10.2505,
        "duration_ms": 250.5,
    }


def test_serialize_error_rounds_the_duration_to_microseconds() -> None:
    entry = serialize_error(
        KeyError("k"), attempt=1, started_at=1.0, finished_at=1.0012345678, retryable=False
    )
    assert entry["duration_ms"] == 1.235
    assert entry["retryable"] is False


@pytest.mark.parametrize(("started", "finished"), [(None, 2.0), (1.0, None), (None, None)])
def test_serialize_error_without_both_times_has_no_duration(started: Any, finished: Any) -> None:
    entry = serialize_error(
        ValueError("x"), attempt=1, started_at=started, finished_at=finished, retryable=True
    )
    assert entry["duration_ms"] is None
    assert (entry["started_at"], entry["finished_at"]) == (started, finished)


def test_serialize_error_keeps_a_workflow_errors_code_and_message() -> None:
    entry = serialize_error(
        StepTimeoutError("attempt ran past 5 s", limit=5),
        attempt=3,
        started_at=None,
        finished_at=None,
        retryable=True,
    )
    assert (entry["code"], entry["message"], entry["type"]) == (
        "step_timeout",
        "attempt ran past 5 s",
        "StepTimeoutError",
    )


def test_serialize_error_takes_a_workflow_errors_message_not_its_str() -> None:
    class Decorated(NonRetryableError):
        def __str__(self) -> str:
            return f"[decorated] {self.message}"

    entry = serialize_error(
        Decorated("card expired"), attempt=1, started_at=None, finished_at=None, retryable=False
    )
    assert (entry["code"], entry["message"]) == ("non_retryable", "card expired")


class CodedError(Exception):
    def __init__(self, code: Any) -> None:
        super().__init__("declined")
        self.code = code


@pytest.mark.parametrize(
    ("code", "journaled"), [("card_declined", "card_declined"), ("", "CodedError"), (402, "CodedError")]
)
def test_serialize_error_takes_a_non_empty_string_code_or_the_class_name(code: Any, journaled: str) -> None:
    entry = serialize_error(CodedError(code), attempt=1, started_at=None, finished_at=None, retryable=True)
    assert entry["code"] == journaled


def test_serialize_error_truncates_long_messages_and_names_empty_ones() -> None:
    long = serialize_error(
        RuntimeError("x" * 5000), attempt=1, started_at=None, finished_at=None, retryable=True
    )
    assert long["message"] == "x" * 4000
    empty = serialize_error(RuntimeError(), attempt=1, started_at=None, finished_at=None, retryable=True)
    assert empty["message"] == "RuntimeError"
    assert json.loads(dumps(long)) == long


class NotRetryable(Exception):
    retryable = False


class Declined(Exception):
    code = "card_declined"


class SubDeclined(Declined):
    pass


def test_is_retryable_by_attribute_class_name_base_class_and_code() -> None:
    assert is_retryable(ConnectionError("x")) is True
    assert is_retryable(NonRetryableError("no")) is False
    assert is_retryable(NotRetryable()) is False
    assert is_retryable(KeyError("k"), ("KeyError",)) is False
    assert is_retryable(KeyError("k"), ("LookupError",)) is False  # a base class counts
    assert is_retryable(KeyError("k"), ("ValueError",)) is True
    assert is_retryable(SubDeclined(), ("card_declined",)) is False  # by its code
    assert is_retryable(SubDeclined(), ("Declined",)) is False
    assert is_retryable(SubDeclined(), ("card",)) is True
    assert is_retryable(CodedError(402), ("402",)) is True  # a non-string code is not matched


def test_a_lone_surrogate_is_refused_naming_the_value_or_its_key() -> None:
    with pytest.raises(SerializationError) as in_text:
        check_size("j:00000001", "ok \ud800", what="output of step 'a'")
    assert in_text.value.details == {"what": "output of step 'a'", "reason": "lone_surrogate"}
    with pytest.raises(SerializationError) as in_key:
        check_size("i:\udc00", "ok", what="idempotent result")
    assert in_key.value.details == {"what": "the key of idempotent result", "reason": "lone_surrogate"}
    check_size("k", "é✓", what="value")  # valid non-ASCII text is fine


def test_encode_value_refuses_a_lone_surrogate_by_name() -> None:
    with pytest.raises(SerializationError) as caught:
        encode_value({"note": "\ud800"}, what="input")
    assert caught.value.details == {"what": "input", "reason": "lone_surrogate"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        -0.0,
        1e300,
        0.1,
        "é\u2028\x00\x1f",
        [1, (2, 3)],
        {"a": {"b": [True, False, None]}},
        {1: 2, None: 3},
    ],
)
def test_dumps_writes_the_text_of_the_standard_encoder(value: Any) -> None:
    standard = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert dumps(value) == standard.encode(value)


def test_dumps_refuses_what_the_standard_encoder_refuses() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    for bad in (float("nan"), [float("inf")], {"a": {1, 2}}, b"x", {(1, 2): 3}, cycle):
        with pytest.raises(SerializationError):
            encode_value(bad, what="output")


def test_number_text_is_the_encoders_text_whatever_came_before() -> None:
    from workkit_workflow.definitions._json import dumps, number_text

    # Repeats (the kept last value), signed zeros, ints and bools equal to a kept float.
    values: list[Any] = [1.5, 1.5, 0.0, -0.0, 0.0, 2.0, 2, True, 1.0, 1, 1e300, 1e-7, 1_796_042_562.817]
    values += [1_796_042_562.817, -3.25, -3.25, 5e-324]
    for value in values:
        assert number_text(value) == dumps(value), value
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            number_text(bad)


_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
)
_OUTPUT = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=20),
        st.dictionaries(st.integers(-5, 5), inner, max_size=3),
    ),
    max_leaves=25,
)


class _Label(str):
    pass


@settings(max_examples=400, deadline=None)
@given(_OUTPUT)
def test_a_step_output_reads_back_as_its_text_decodes(value: Any) -> None:
    # ``decoded`` skips the decoder for the usual outputs (a scalar, a flat dict of scalars):
    # what it gives must be what the journal's text gives on replay, type for type.
    text = dumps(value)
    expected = loads(text)
    got = decoded(value, text)
    assert _typed(got) == _typed(expected)
    if isinstance(value, dict):
        assert got is not value  # a copy: the step's own object is not handed on


@pytest.mark.parametrize(
    "value",
    [{"a": (1, 2)}, {"a": _Label("x")}, {1: "one"}, {"a": True, "b": [1]}, (1, 2), _Label("x"), {"k": 1.0}],
)
def test_a_step_output_that_does_not_read_back_as_itself_is_decoded(value: Any) -> None:
    text = dumps(value)
    assert _typed(decoded(value, text)) == _typed(loads(text))


def _typed(value: Any) -> Any:
    """``value`` with the type of every part beside it (``1 == 1.0 == True`` otherwise)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)
