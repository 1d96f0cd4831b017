"""The one retry policy for transactions the kernel refuses because the ruleset moved.

A repair batch is guarded by the generation id it was planned on; when anything else
commits first the kernel refuses it (ERESTART), or a rule it replaces is gone (ENOENT).
Nothing was changed, so trying again on a fresh look is safe, but on a ruleset that
never stops moving it must end: after `retries` refusals in a row, stop and let the
ruleset settle. The machine (repairs at once, compat runs) and the one-shot commands
(`fwgate repair`, through fwgate.adapters.probe) ask this same object. Pure."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5   # after the first attempt: six attempts in all

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def again(self, refused_in_a_row: int) -> bool:
        """After this many refusals in a row, is another attempt allowed?"""
        return refused_in_a_row <= self.retries


MOVED_RULESET = RetryPolicy()
