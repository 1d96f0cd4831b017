"""Confirming that a quiet window really was quiet. Pure.

At the window's end the machine asks the generation id: the same as the baseline's
means nothing at all was committed (the cheap answer). Otherwise something committed
somewhere, and a dump's digest of the watched scope decides. Every change bumps the
serial; an answer to a question asked before the latest change is stale and dropped."""
from __future__ import annotations

import enum

from .window import QuietWindow


class Asking(enum.Enum):
    NOTHING = "nothing"
    GENID = "genid"       # a QueryGeneration is out
    DIGEST = "digest"     # the generation moved: a Dump's digest decides


class Answer(enum.Enum):
    STALE = "stale"           # a change came in meanwhile: the window runs again
    QUIET = "quiet"           # confirmed: nothing changed
    NEED_DIGEST = "digest"    # ask for a dump
    CHANGED = "changed"       # the digest moved without an event we saw
    IGNORED = "ignored"       # not an answer to a question of ours


class GenerationConfirmer:
    def __init__(self) -> None:
        self.asking = Asking.NOTHING
        self.serial = 0        # bumped by every change
        self.asked_at = -1     # the serial the question was asked at

    @property
    def busy(self) -> bool:
        return self.asking is not Asking.NOTHING

    def changed(self) -> None:
        """Anything moved: answers to earlier questions are stale."""
        self.serial += 1

    def ask_genid(self) -> None:
        self.asking, self.asked_at = Asking.GENID, self.serial

    def on_generation(self, genid: int, window: QuietWindow) -> Answer:
        if self.asking is not Asking.GENID or self.asked_at != self.serial:
            self.asking = Asking.NOTHING
            return Answer.STALE
        if window.unchanged_since_baseline(genid):
            self.asking = Asking.NOTHING
            return Answer.QUIET
        self.asking, self.asked_at = Asking.DIGEST, self.serial
        return Answer.NEED_DIGEST

    def on_dump(self, genid: int, digest: str, current: bool, window: QuietWindow) -> Answer:
        """A dump came in: the answer to a digest question, if one is out and the dump
        shows the state as of now. QUIET moves the baseline to this generation."""
        if self.asking is not Asking.DIGEST:
            return Answer.IGNORED
        self.asking = Asking.NOTHING
        if self.asked_at != self.serial or not current:
            return Answer.STALE
        if window.same_as_baseline(genid, digest):
            return Answer.QUIET
        self.changed()
        return Answer.CHANGED
