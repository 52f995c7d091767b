"""The byte-exact JSON member replacement the stdio bridge uses for id rewriting."""

from __future__ import annotations

import json

import pytest

from nfrx.plugins.mcp.splice import locate, splice

ID = ("id",)
TOKEN = ("params", "_meta", "progressToken")


def test_only_the_located_members_change() -> None:
    raw = (
        b'{ "jsonrpc" : "2.0", "n": 1e2, "id" :\t"a\\"}b" , '
        b'"params":{"x":-0,"_meta":{"progressToken":7}}}'
    )
    spans = locate(raw, [ID, TOKEN])
    out = splice(raw, {spans[ID]: b'"nfrx-1"', spans[TOKEN]: b'"nfrx-p-1"'})
    assert out == (
        b'{ "jsonrpc" : "2.0", "n": 1e2, "id" :\t"nfrx-1" , '
        b'"params":{"x":-0,"_meta":{"progressToken":"nfrx-p-1"}}}'
    )


def test_nested_and_string_content_do_not_confuse_the_scanner() -> None:
    raw = b'{"result":{"text":"{\\"id\\": 3} [ ] }","list":[{"id":9},[1,{"a":"]"}]]},"id":"nfrx-4"}'
    spans = locate(raw, [ID])
    assert raw[slice(*spans[ID])] == b'"nfrx-4"'
    assert json.loads(splice(raw, {spans[ID]: b"12"}))["id"] == 12


def test_escaped_keys_and_duplicates_follow_json_loads() -> None:
    raw = b'{"\\u0069d":1,"id":2}'
    spans = locate(raw, [ID])
    assert raw[slice(*spans[ID])] == b"2"  # the last duplicate wins, as in json.loads
    assert json.loads(raw)["id"] == 2


@pytest.mark.parametrize("raw", [b"[1,2]", b'"id"', b"{}", b'{"params":{"_meta":3}}'])
def test_absent_members_are_not_located(raw: bytes) -> None:
    assert locate(raw, [ID, TOKEN]) == {}
