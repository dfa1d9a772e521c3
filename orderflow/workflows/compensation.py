"""The saga's undo list: compensations registered before their step, run in reverse, shielded.

Shape taken from Temporal's compensating-transactions sample: register the undo *before* the step
(a step whose response was lost may still have happened), make every undo safe to repeat, run
them newest first, and do not let a second cancellation interrupt them halfway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

Undo = Callable[[], Awaitable[str | None]]
# Each saga names its own undos: order to cash's `CompensationStep`, the return's `ReturnCompensationStep`.
StepT = TypeVar("StepT", bound=StrEnum)


@dataclass
class Compensation(Generic[StepT]):
    """One registered undo: which step it reverses and how."""

    step: StepT
    undo: Undo


@dataclass
class Compensations(Generic[StepT]):
    """The undos of the steps begun so far, in the order they were registered."""

    pending: list[Compensation[StepT]] = field(default_factory=list)

    def register(self, step: StepT, undo: Undo) -> None:
        """Add the undo of a step that is about to run; registering the same step twice keeps one."""
        if any(c.step is step for c in self.pending):
            return
        self.pending.append(Compensation(step, undo))

    @property
    def steps(self) -> list[StepT]:
        """The registered undos, in registration order."""
        return [c.step for c in self.pending]

    async def run_in_reverse(self, run_one: Callable[[Compensation[StepT]], Awaitable[None]]) -> None:
        """Run every undo, newest first, each once, shielded from a further cancellation."""
        task = asyncio.ensure_future(self._drain(run_one))
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                # A second cancel request must not abandon a half-undone order: keep waiting.
                if task.done():
                    task.result()
                    return

    async def _drain(self, run_one: Callable[[Compensation[StepT]], Awaitable[None]]) -> None:
        while self.pending:
            compensation = self.pending[-1]
            await run_one(compensation)
            self.pending.pop()
