"""Logging: structured journal entries under systemd, plain stderr lines otherwise.

Entries go straight to journald's native socket (systemd's "native journal
protocol": KEY=value lines in one datagram), not through libsystemd: its
sd_journal_sendv() adds CODE_FILE/CODE_LINE/CODE_FUNC of its own C caller
(pystemd/journal.c), where an entry should name fwgate's line that logged it."""
from __future__ import annotations

import os
import socket
import struct
import sys
import time

JOURNAL_SOCKET = "/run/systemd/journal/socket"

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


def _field(key: str, value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if b"\n" in data:  # the protocol's binary form: name, 64-bit LE length, bytes
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


def _caller() -> tuple[str, int, str]:
    """File, line and function of the first frame outside this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None:
        return __file__, 0, "?"
    return frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name


class Log:
    def __init__(self, journal: bool | None = None, stream=None,
                 socket_path: str = JOURNAL_SOCKET):
        self.stream = stream or sys.stderr
        self._sock: socket.socket | None = None
        self._path = socket_path
        if journal_wanted() if journal is None else journal:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def _journal(self, level: str, message: str, fields: dict[str, object]) -> bool:
        code_file, code_line, code_func = _caller()
        entry = [_field("MESSAGE", message), _field("PRIORITY", str(PRIORITY[level])),
                 _field("SYSLOG_IDENTIFIER", "fwgate"), _field("CODE_FILE", code_file),
                 _field("CODE_LINE", str(code_line)), _field("CODE_FUNC", code_func)]
        entry += [_field(k, str(v)) for k, v in fields.items() if v is not None]
        try:
            self._sock.sendto(b"".join(entry), self._path)
        except OSError:
            return False  # journald restarting, or an entry too big: the plain line below
        return True

    def __call__(self, level: str, message: str, **fields: object) -> None:
        if self._sock is not None and self._journal(level, message, fields):
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
