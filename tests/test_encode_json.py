"""_core.json_row: the compact JSON text of a flat row in C, byte for byte
what the json module writes (the encoder of pylogicaldecoding.formats),
and None for every row it leaves to the json module."""

import collections
import enum
import json
import sys

import pytest

from pylogicaldecoding import _core


def dumps(row):
    return json.dumps(row, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def every_character():
    """Every code point but the surrogates, in strings of 1000."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    return ["".join(map(chr, cps[i:i + 1000]))
            for i in range(0, len(cps), 1000)]


def test_the_text_is_the_json_modules():
    rows = [
        {},
        {"id": 1, "data": "row 1"},
        {"n": None, "t": True, "f": False, "z": 0, "neg": -17,
         "big": 2 ** 63, "bigger": -(10 ** 40), "ll": -2 ** 63,
         "e": "", "q": '"\\/\b\f\n\r\t\x00\x1f\x7f\x80'},
        {"clé": "été", "日本": "語", "emoji 🎉": "\U0010ffff"},
        {chr(c): chr(c) for c in range(0x80)},
        {"x" * 600: "y" * 5000},     # past the buffer on the stack
    ]
    rows += [{"s": s, s[:10]: 1} for s in every_character()]
    for row in rows:
        assert _core.json_row(row) == dumps(row), row


class Text(str):
    pass


class Number(int):
    pass


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    1.5, float("nan"), b"x", [1], (1,), {"a": 1}, Text("a"), Number(3),
    Color.RED, object(), "\ud800", "a\udfffb"])
def test_other_values_are_left_to_the_json_module(value):
    assert _core.json_row({"ok": 1, "v": value}) is None


def test_other_keys_and_containers_are_left_to_the_json_module():
    assert _core.json_row({1: "a"}) is None
    assert _core.json_row({None: "a"}) is None
    assert _core.json_row({Text("k"): "a"}) is None
    assert _core.json_row({"\ud800": 1}) is None
    assert _core.json_row(collections.OrderedDict(a=1)) is None
    assert _core.json_row([("a", 1)]) is None
    assert _core.json_row(None) is None


def test_an_int_too_long_for_str_raises_as_json_does():
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    big = 10 ** ((limit or 5000) + 1)
    if not limit:           # (a Python without the limit)
        assert _core.json_row({"v": big}) == dumps({"v": big})
        return
    with pytest.raises(ValueError) as ours:
        _core.json_row({"v": big})
    with pytest.raises(ValueError) as theirs:
        dumps({"v": big})
    assert str(ours.value) == str(theirs.value)
