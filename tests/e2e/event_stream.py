"""Reading named server-sent events (``event:`` / ``data:``) from a streaming httpx response, as
they arrive, with a hang guard on every read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import httpx

STEP_TIMEOUT = 20.0


class EventStream:
    """The events of one ``text/event-stream`` response; comments are kept apart."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments: list[str] = []
        self.ended = False

    async def next(self, timeout: float = STEP_TIMEOUT) -> tuple[str, dict[str, Any]]:
        """The next event's name and JSON data. AssertionError if the stream ends first."""
        with trio.fail_after(timeout):
            event = await self._read()
        if event is None:
            raise AssertionError("the event stream ended")
        return event

    async def until(self, name: str, **fields: Any) -> dict[str, Any]:
        """The data of the next ``name`` event whose fields include ``fields``."""
        while True:
            event, data = await self.next()
            if event == name and all(data.get(k) == v for k, v in fields.items()):
                return data

    async def rest(self, timeout: float = STEP_TIMEOUT) -> list[tuple[str, dict[str, Any]]]:
        """Every event up to the end of the stream (which must come within ``timeout``)."""
        events = []
        with trio.fail_after(timeout):
            while (event := await self._read()) is not None:
                events.append(event)
        return events

    async def _read(self) -> tuple[str, dict[str, Any]] | None:
        name, data = "message", []
        async for line in self._lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                parsed: dict[str, Any] = json.loads("\n".join(data))
                return name, parsed
        self.ended = True
        return None
