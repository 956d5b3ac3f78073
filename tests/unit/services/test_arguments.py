"""The code inside a ``python`` tool call's arguments: parsed whole, and decoded live however the stream splits it."""

from __future__ import annotations

import json

import pytest

from cellbox.services.arguments import CodeStream, code_from_arguments

# ------------------------------------------------------------------------------------------- code_from_arguments


def test_json_with_code() -> None:
    assert code_from_arguments('{"code": "print(1)\\nprint(2)"}') == ("print(1)\nprint(2)", None)


def test_code_wins_over_other_string_fields() -> None:
    assert code_from_arguments('{"lang": "python", "code": "x = 1"}') == ("x = 1", None)


def test_raw_code_passes_through_unchanged() -> None:
    raw = "  import math\nprint(math.pi)\n"
    assert code_from_arguments(raw) == (raw, None)


def test_one_other_string_field_is_taken_as_the_code() -> None:
    assert code_from_arguments('{"source": "print(1)", "timeout": 5}') == ("print(1)", None)


def test_two_other_string_fields_are_ambiguous() -> None:
    code, problem = code_from_arguments('{"a": "print(1)", "b": "print(2)"}')
    assert code is None
    assert problem is not None
    assert "'code'" in problem


@pytest.mark.parametrize("arguments", ['{"code": "print(1)"', "{code: 1}", '{"code": "x",}'])
def test_invalid_json_is_reported(arguments: str) -> None:
    code, problem = code_from_arguments(arguments)
    assert code is None
    assert problem is not None
    assert "not valid JSON" in problem


@pytest.mark.parametrize("arguments", ['{"code": 1}', "{}", '{"n": 1, "flag": true}', '{"code": ["x"]}'])
def test_json_without_a_string_is_reported(arguments: str) -> None:
    code, problem = code_from_arguments(arguments)
    assert code is None
    assert problem is not None
    assert "'code'" in problem


@pytest.mark.parametrize("arguments", ["", "   ", "\n\t"])
def test_empty_arguments_have_no_code(arguments: str) -> None:
    assert code_from_arguments(arguments) == (None, "the tool call had no code")


# ---------------------------------------------------------------------------------------------------- CodeStream


def _streamed(arguments: str, pieces: list[str]) -> str:
    assert "".join(pieces) == arguments
    stream = CodeStream()
    return "".join(stream.feed(piece) for piece in pieces)


def _by_size(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _splits(text: str) -> list[list[str]]:
    """Every chunk size 1..10, every cut into two, and every cut into three around each escape-heavy spot."""
    splits = [_by_size(text, size) for size in range(1, 11)]
    splits += [[text[:cut], text[cut:]] for cut in range(len(text) + 1)]
    splits += [[text[:a], text[a:b], text[b:]] for a in range(len(text)) for b in range(a, min(a + 13, len(text)))]
    return splits


CODES = [
    "print('hello')",
    'print("quoted")\n',
    "a\\b\tc\r\nd\b\f",
    "name = 'café'",
    "smile = '😀'  # a surrogate pair in JSON",
    "mixed: é😀\"\\\n\t end",
    "",
]


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_every_split_of_json_arguments_decodes_to_the_code(code: str, ensure_ascii: bool) -> None:
    arguments = json.dumps({"code": code}, ensure_ascii=ensure_ascii)
    assert json.loads(arguments)["code"] == code
    for pieces in _splits(arguments):
        assert _streamed(arguments, pieces) == code, pieces


def test_escapes_are_the_json_ones() -> None:
    arguments = r'{"code": "\u00e9 \ud83d\ude00 \n \" \\ \t \/ \b \f \r"}'
    expected = json.loads(arguments)["code"]
    assert expected == 'é 😀 \n " \\ \t / \b \f \r'
    for pieces in _splits(arguments):
        assert _streamed(arguments, pieces) == expected, pieces


@pytest.mark.parametrize(
    "arguments",
    [
        '{"lang": "python", "timeout": 5, "code": "x = \\"y\\"\\nprint(x)"}',
        '{ "code" :  "x = \\"y\\"\\nprint(x)" }',
        '\n  {\n  "code"\n:\n"x = \\"y\\"\\nprint(x)"\n}',
        '{"name": "code", "code": "x = \\"y\\"\\nprint(x)"}',
        '{"xcode": "no", "code": "x = \\"y\\"\\nprint(x)"}',
        '{"note": "a \\"code\\": \\"trap", "code": "x = \\"y\\"\\nprint(x)"}',
    ],
)
def test_keys_and_whitespace_around_code(arguments: str) -> None:
    assert json.loads(arguments)["code"] == 'x = "y"\nprint(x)'
    for pieces in _splits(arguments):
        assert _streamed(arguments, pieces) == 'x = "y"\nprint(x)', pieces


def test_text_after_the_code_string_is_ignored() -> None:
    arguments = '{"code": "print(1)", "comment": "not code"}'
    for pieces in _splits(arguments):
        assert _streamed(arguments, pieces) == "print(1)"


@pytest.mark.parametrize("raw", ["print(1)\nprint(2)", "  x = 'a\\n'  ", "\n\nimport os"])
def test_raw_arguments_pass_through(raw: str) -> None:
    for pieces in _splits(raw):
        assert _streamed(raw, pieces) == raw, pieces


def test_an_object_without_code_yields_nothing() -> None:
    arguments = '{"other": 1}'
    for pieces in _splits(arguments):
        assert _streamed(arguments, pieces) == ""


def test_whitespace_only_yields_nothing_until_the_kind_is_known() -> None:
    stream = CodeStream()
    assert stream.feed("  ") == ""
    assert stream.feed("\n") == ""
    assert stream.feed("x") == "  \nx"
    assert stream.feed("y") == "y"


def test_pieces_are_released_as_soon_as_they_are_complete() -> None:
    stream = CodeStream()
    assert stream.feed('{"code": "ab') == "ab"
    assert stream.feed("\\") == ""
    assert stream.feed("n") == "\n"
    assert stream.feed("\\ud83d") == ""
    assert stream.feed("\\ude0") == ""
    assert stream.feed('0c"') == "😀c"
    assert stream.feed(', "more": "x"}') == ""


@pytest.mark.parametrize("arguments", [r'{"code": "\ud800\u0041"}', r'{"code": "\ud83d"}'])
def test_lone_surrogates_decode_as_json_does(arguments: str) -> None:
    """A lone high surrogate is legal for Python's json; the stream should not invent a character or stall."""
    assert _streamed(arguments, [arguments]) == json.loads(arguments)["code"]
