"""Journal entries in journald's native protocol, read back from a real socket."""
import socket
import struct

from fwgate.adapters.journal import MESSAGE_IDS, Log


def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol's two field forms: KEY=value, and KEY, LE64 length, bytes."""
    fields, rest = {}, datagram
    while rest:
        line, sep, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            rest = after
        else:
            size = struct.unpack("<Q", after[:8])[0]
            key, value, rest = line, after[8:8 + size], after[8 + size + 1:]
        fields[key.decode()] = value.decode()
    return fields


def logged_from_here(log: Log) -> int:
    log.event("repaired", "rules", "re-encoded\nNetbird's rule", 12, genid=7)
    return logged_from_here.__code__.co_firstlineno + 1


def test_entries_name_fwgates_caller_not_the_library(tmp_path):
    path = str(tmp_path / "socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        line = logged_from_here(Log(journal=True, socket_path=path))
        entry = parse(server.recv(65536))
    assert entry["CODE_FILE"] == __file__
    assert entry["CODE_LINE"] == str(line)
    assert entry["CODE_FUNC"] == "logged_from_here"
    assert entry["MESSAGE"] == "re-encoded\nNetbird's rule"  # binary form, newline kept
    assert entry["MESSAGE_ID"] == MESSAGE_IDS["repaired"] and entry["PRIORITY"] == "5"
    assert entry["FWGATE_EVENT"] == "repaired" and entry["FWGATE_GENID"] == "7"
    assert entry["SYSLOG_IDENTIFIER"] == "fwgate" and "FWGATE_DIGEST" not in entry


def test_no_journal_socket_falls_back_to_a_plain_line(tmp_path, capsys):
    import sys
    log = Log(journal=True, socket_path=str(tmp_path / "missing"), stream=sys.stdout)
    log.warning("cannot write x")
    assert capsys.readouterr().out.endswith("fwgate: warning: cannot write x\n")
