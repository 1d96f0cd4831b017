"""Logging: structured journal entries under systemd, plain stderr lines otherwise."""
from __future__ import annotations

import os
import sys
import time

# A fixed MESSAGE_ID per event kind, so `journalctl MESSAGE_ID=...` finds them all.
MESSAGE_IDS = {
    "stage-start": "35eb3ab380cd4f7faf5fadd791b727ed",
    "stage-held": "a65db84bb8fc42fd93d643b1e7103df9",
    "stage-skipped": "b137db49fcec4fbba88ebcaa0009d2f2",
    "settled": "bcebbd898fc64d8d84137849eb1d6b86",
    "ready": "572251d123524041b2b7d05ae8053c07",
    "timeout": "3957fe30e0c3421dbdb1464ebf9691e9",
    "incompatible": "6cdf283d673d4080be3e356ba88705e2",
    "repaired": "dc88dbce3b1b4e7aa74073695a5a5d75",
    "native-fallback": "c291404aca2c47d7a558f022ce51aab4",
    "conflict": "6016cfbd955140deb327038958d9ec0c",
    "removed": "d809cb412d124df19ea78b62b790ab89",
    "prevention": "874d66e73aa94c4e8055ad6f891f8544",
}
PRIORITY = {"error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
EVENT_PRIORITY = {"timeout": "warning", "incompatible": "warning", "repaired": "notice",
                  "ready": "notice", "native-fallback": "warning", "conflict": "warning"}


def journal_wanted() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class Log:
    def __init__(self, journal: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self._send = None
        if journal_wanted() if journal is None else journal:
            try:
                from pystemd.journal import sendv
                self._send = sendv
            except ImportError:
                self._send = None

    def __call__(self, level: str, message: str, **fields: object) -> None:
        if self._send:
            extra = {k: str(v) for k, v in fields.items() if v is not None}
            self._send(f"PRIORITY={PRIORITY[level]}", MESSAGE=message,
                       SYSLOG_IDENTIFIER="fwgate", **extra)
            return
        stamp = time.strftime("%H:%M:%S")
        prefix = "" if level in ("info", "notice") else f"{level}: "
        print(f"{stamp} fwgate: {prefix}{message}", file=self.stream, flush=True)

    def info(self, message: str, **fields: object) -> None:
        self("info", message, **fields)

    def warning(self, message: str, **fields: object) -> None:
        self("warning", message, **fields)

    def error(self, message: str, **fields: object) -> None:
        self("error", message, **fields)

    def event(self, kind: str, stage: str, message: str, elapsed_ms: int,
              genid: int | None = None, digest: str | None = None,
              level: str | None = None) -> None:
        """One gate event with DESIGN's structured fields."""
        self(level or EVENT_PRIORITY.get(kind, "info"), message, MESSAGE_ID=MESSAGE_IDS.get(kind),
             FWGATE_EVENT=kind, FWGATE_STAGE=stage, FWGATE_ELAPSED_MS=elapsed_ms,
             FWGATE_GENID=genid, FWGATE_DIGEST=digest)
