"""One API request whose choices are separate engine streams (chat completions, legacy
completions): answered in JSON once every choice is collected, or as Server-Sent Events. Either
way no choice outlives its request: a failure, a client that leaves or a stream closed early
cancels them all. Subclasses submit the streams and shape the answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from api.deps import unless_disconnected
from api.errors import engine_errors
from api.sse import EventSourceResponse, guarded
from inference.types import GenerationResult


class ChoiceStreams:
    param = ""  # the request field that engine errors (context length, ...) name

    def __init__(self, engine: Any, body: Any):
        self.engine = engine
        self.body = body
        self.streams: list[Any] = []  # in choice order

    async def respond(self, request: Request) -> Any:
        with engine_errors(self.param):
            await self.submit_all()
        if self.body.stream:
            return EventSourceResponse(guarded(self.events(), self.cancel_all, self.param))
        try:
            collected = asyncio.gather(*(stream.collect() for stream in self.streams))
            results = await unless_disconnected(request, collected, self.cancel_all)
        except BaseException:
            self.cancel_all()  # no choice outlives its request
            raise
        return self.response(results)

    def cancel_all(self) -> None:
        for stream in self.streams:
            stream.cancel()

    async def submit_all(self) -> None:
        raise NotImplementedError

    def events(self) -> AsyncIterator[str]:
        raise NotImplementedError

    def response(self, results: list[GenerationResult]) -> Any:
        raise NotImplementedError
