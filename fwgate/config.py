"""The config file: YAML → frozen dataclasses, every error naming key path and line.

The dataclasses are pure; PyYAML is imported only when a file is read, and the
shipped defaults (default.yaml) are read on first use."""
from __future__ import annotations

import functools
import os
import re
import stat
from dataclasses import dataclass, field, replace

from .errors import ConfigError
from .model import TableRef
from .timespan import parse_timespan

DEFAULT_PATH = "/etc/fwgate.yaml"
# metrics.textfile: auto writes into node_exporter's textfile directory (Debian's
# prometheus-node-exporter) whenever that directory exists; none when it does not.
METRICS_AUTO = "auto"
METRICS_AUTO_DIR = "/var/lib/prometheus/node-exporter"
MAX_CONFIG_BYTES = 1 << 20
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_OBJNAME = re.compile(r"^[^\s\x00]{1,255}$")
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|target|socket|mount|device|path|timer|scope|slice|swap)$")


@dataclass(frozen=True)
class UnitActive:
    unit: str


@dataclass(frozen=True)
class LinkUp:
    link: str


@dataclass(frozen=True)
class TableExists:
    table: TableRef


@dataclass(frozen=True)
class ChainExists:
    table: TableRef
    chain: str
    iifname: str | None = None
    oifname: str | None = None
    # True: "when it exists". A chain that is not there holds; one that is must have
    # the rule asked for. For chains a plain node creates only later (k3s's ip filter).
    if_exists: bool = False


Condition = UnitActive | LinkUp | TableExists | ChainExists


@dataclass(frozen=True)
class Stage:
    name: str
    conditions: tuple[Condition, ...]
    settle: float | None = None   # None: the gate's own
    timeout: float | None = None  # None: no stage limit; the gate's timeout still applies
    # The unit whose work the stage waits for: when systemd does not know it (not
    # installed) or it is masked, the stage is skipped, never waited for.
    if_installed: str | None = None


@dataclass(frozen=True)
class CompatConfig:
    on_incompatible: str = "fail"
    iptables: str = "auto"


@dataclass(frozen=True)
class AfterReady:
    mode: str = "exit"                   # exit | watch
    restart_after_repair: str | None = None  # a unit to restart after a live repair, if it crashed
    restart_interval: float = 600.0      # at most one such restart per interval


@dataclass(frozen=True)
class Config:
    settle: float = 5.0
    timeout: float = 300.0        # 0 = wait forever
    on_timeout: str = "proceed"
    watch: tuple[TableRef, ...] = (TableRef("ip", "netbird"), TableRef("ip6", "netbird"),
                                   TableRef("ip", "filter"), TableRef("ip6", "filter"))
    stages: tuple[Stage, ...] = ()
    compat: CompatConfig = field(default_factory=CompatConfig)
    after_ready: AfterReady = field(default_factory=AfterReady)
    metrics_textfile: str | None = None
    source: str = "<defaults>"

    def stage_settle(self, stage: Stage) -> float:
        return self.settle if stage.settle is None else stage.settle

    def tunnel_links(self) -> frozenset[str]:
        """The tunnel interfaces the stages wait for (Netbird's wt0 by default)."""
        links = {c.link for s in self.stages for c in s.conditions if isinstance(c, LinkUp)}
        return frozenset(links or {"wt0"})

    def units_watched(self) -> tuple[str, ...]:
        """The units the stages ask systemd about: to be active, or to be installed."""
        units = [c.unit for s in self.stages for c in s.conditions if isinstance(c, UnitActive)]
        units += [s.if_installed for s in self.stages if s.if_installed]
        return tuple(dict.fromkeys(units))

    def tables_of_interest(self) -> tuple[TableRef, ...]:
        """Watched tables plus tables that rule conditions name."""
        seen = dict.fromkeys(self.watch)
        for stage in self.stages:
            for cond in stage.conditions:
                if isinstance(cond, (TableExists, ChainExists)):
                    seen.setdefault(cond.table)
        return tuple(seen)


# --- reading ------------------------------------------------------------------

class _Reader:
    """Walks a composed YAML node tree so every value keeps its line number."""

    def __init__(self, source: str):
        import yaml
        self.yaml = yaml
        self.source = source
        self.seen: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, path: str, node, message: str) -> ConfigError:
        where = f"line {node.start_mark.line + 1}"
        return ConfigError(f"{self.source}: {path}: {message} ({where})" if path
                           else f"{self.source}: {message} ({where})")

    def visit(self, path: str, node) -> None:
        # Aliases make composed nodes shared; refusing them also defuses YAML bombs.
        if id(node) in self.seen:
            raise self.fail(path, node, "YAML anchors and aliases are not supported")
        self.seen.add(id(node))
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(path, node, f"unsupported YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')}")

    def mapping(self, path: str, node, allowed: tuple[str, ...]) -> dict:
        self.visit(path, node)
        if not isinstance(node, self.yaml.MappingNode):
            raise self.fail(path, node, "expected a mapping of keys")
        out: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, self.yaml.ScalarNode) else None
            key_path = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                known = ", ".join(allowed)
                raise self.fail(key_path if key else path, key_node,
                                f"unknown key (known: {known})")
            if key in out:
                raise self.fail(key_path, key_node, "duplicate key")
            out[key] = value_node
        return out

    def sequence(self, path: str, node) -> list:
        self.visit(path, node)
        if not isinstance(node, self.yaml.SequenceNode):
            raise self.fail(path, node, "expected a list")
        return list(node.value)

    def scalar(self, path: str, node):
        self.visit(path, node)
        if not isinstance(node, self.yaml.ScalarNode):
            raise self.fail(path, node, "expected a single value")
        try:
            return self.constructor.construct_object(node)
        except self.yaml.YAMLError as exc:
            raise self.fail(path, node, f"bad value: {exc.problem or exc}") from None

    def string(self, path: str, node, what: str, pattern: re.Pattern | None = None) -> str:
        value = self.scalar(path, node)
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise self.fail(path, node, f"expected {what}")
        return value

    def choice(self, path: str, node, choices: tuple[str, ...]) -> str:
        value = self.scalar(path, node)
        if value not in choices:
            raise self.fail(path, node, f"expected one of: {', '.join(choices)}")
        return value

    def boolean(self, path: str, node) -> bool:
        value = self.scalar(path, node)
        if not isinstance(value, bool):
            raise self.fail(path, node, "expected true or false")
        return value

    def timespan(self, path: str, node) -> float:
        try:
            return parse_timespan(self.scalar(path, node))
        except ValueError as exc:
            raise self.fail(path, node, str(exc)) from None

    def strings(self, path: str, node, what: str, pattern: re.Pattern) -> list[str]:
        """One string or a list of them."""
        if isinstance(node, self.yaml.SequenceNode):
            items = self.sequence(path, node)
            if not items:
                raise self.fail(path, node, f"expected {what}")
            return [self.string(f"{path}[{i}]", n, what, pattern) for i, n in enumerate(items)]
        return [self.string(path, node, what, pattern)]

    def words(self, path: str, node, count: int, what: str) -> list[str]:
        parts = self.string(path, node, what).split()
        if len(parts) != count:
            raise self.fail(path, node, f"expected {what}")
        if parts[0] not in FAMILIES:
            raise self.fail(path, node, f"unknown family {parts[0]!r} (known: {', '.join(FAMILIES)})")
        if not all(_OBJNAME.match(p) for p in parts[1:]):
            raise self.fail(path, node, f"expected {what}")
        return parts


def _read_rules(r: _Reader, path: str, node) -> list[Condition]:
    out: list[Condition] = []
    items = r.sequence(path, node)
    if not items:
        raise r.fail(path, node, "expected at least one table: or chain: entry")
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]"
        keys = r.mapping(ipath, item, ("table", "chain", "iifname", "oifname", "if_exists"))
        if ("table" in keys) == ("chain" in keys):
            raise r.fail(ipath, item, "expected exactly one of table: or chain:")
        if "table" in keys:
            if "iifname" in keys or "oifname" in keys:
                raise r.fail(ipath, item, "iifname/oifname go with chain:, not table:")
            if "if_exists" in keys:
                raise r.fail(f"{ipath}.if_exists", keys["if_exists"],
                             "goes with chain:, not table: (a table wanted only if it exists "
                             "is no condition; name the chain and the rule it must hold)")
            family, name = r.words(f"{ipath}.table", keys["table"], 2, 'a table as "FAMILY NAME"')
            out.append(TableExists(TableRef(family, name)))
            continue
        family, table, chain = r.words(f"{ipath}.chain", keys["chain"], 3,
                                       'a chain as "FAMILY TABLE CHAIN"')
        ifnames = {k: r.string(f"{ipath}.{k}", keys[k], "an interface name", _IFNAME)
                   for k in ("iifname", "oifname") if k in keys}
        if_exists = r.boolean(f"{ipath}.if_exists", keys["if_exists"]) if "if_exists" in keys \
            else False
        if if_exists and not ifnames:
            raise r.fail(f"{ipath}.if_exists", keys["if_exists"],
                         "needs iifname: or oifname: (a chain wanted only if it exists, with "
                         "nothing asked of it, is no condition)")
        out.append(ChainExists(TableRef(family, table), chain, **ifnames, if_exists=if_exists))
    return out


def _read_stage(r: _Reader, path: str, node) -> Stage:
    keys = r.mapping(path, node, ("name", "unit", "link", "rules", "settle", "timeout",
                                  "if_installed"))
    if "name" not in keys:
        raise r.fail(path, node, "a stage needs a name:")
    name = r.string(f"{path}.name", keys["name"], "a stage name")
    conditions: list[Condition] = []
    if "unit" in keys:
        units = r.strings(f"{path}.unit", keys["unit"], "a systemd unit name such as netbird.service", _UNIT)
        conditions += [UnitActive(u) for u in units]
    if "link" in keys:
        links = r.strings(f"{path}.link", keys["link"], "an interface name", _IFNAME)
        conditions += [LinkUp(name) for name in links]
    if "rules" in keys:
        conditions += _read_rules(r, f"{path}.rules", keys["rules"])
    if not conditions:
        raise r.fail(path, node, "a stage needs at least one of unit:, link:, rules:")
    settle = r.timespan(f"{path}.settle", keys["settle"]) if "settle" in keys else None
    timeout = r.timespan(f"{path}.timeout", keys["timeout"]) if "timeout" in keys else None
    installed = r.string(f"{path}.if_installed", keys["if_installed"],
                         "a systemd unit name such as netbird.service", _UNIT) \
        if "if_installed" in keys else None
    return Stage(name, tuple(conditions), settle, timeout or None, installed)


def parse_config(text: str, source: str = "<config>", base: Config | None = None) -> Config:
    """Parse config text; absent keys keep base's values (the shipped defaults).

    Raises ConfigError naming the key path and line."""
    base = defaults() if base is None else base
    r = _Reader(source)
    yaml = r.yaml
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML: {problem}{where}") from None
    if root is None:
        return replace(base, source=source)
    keys = r.mapping("", root, ("settle", "timeout", "on_timeout", "watch", "stages", "compat",
                                "after_ready", "metrics"))
    settle = r.timespan("settle", keys["settle"]) if "settle" in keys else base.settle
    timeout = r.timespan("timeout", keys["timeout"]) if "timeout" in keys else base.timeout
    on_timeout = (r.choice("on_timeout", keys["on_timeout"], ("proceed", "fail"))
                  if "on_timeout" in keys else base.on_timeout)
    watch = base.watch
    if "watch" in keys:
        items = r.sequence("watch", keys["watch"])
        if not items:
            raise r.fail("watch", keys["watch"], "expected at least one table")
        watch = tuple(TableRef(*r.words(f"watch[{i}]", n, 2, 'a table as "FAMILY NAME"'))
                      for i, n in enumerate(items))
    stages = base.stages
    if "stages" in keys:
        items = r.sequence("stages", keys["stages"])
        if not items:
            raise r.fail("stages", keys["stages"], "expected at least one stage")
        stages = tuple(_read_stage(r, f"stages[{i}]", n) for i, n in enumerate(items))
        names = [s.name for s in stages]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise r.fail(f"stages[{i}].name", items[i], f"stage name {name!r} is used twice")
    compat = base.compat
    if "compat" in keys:
        ckeys = r.mapping("compat", keys["compat"], ("on_incompatible", "iptables"))
        if "on_incompatible" in ckeys:
            compat = replace(compat, on_incompatible=r.choice(
                "compat.on_incompatible", ckeys["on_incompatible"], ("fail", "warn", "repair")))
        if "iptables" in ckeys:
            binary = r.string("compat.iptables", ckeys["iptables"], "auto, none or a path to iptables")
            if binary not in ("auto", "none") and not binary.startswith("/"):
                raise r.fail("compat.iptables", ckeys["iptables"], "expected auto, none or an absolute path")
            compat = replace(compat, iptables=binary)
    after_ready = base.after_ready
    if "after_ready" in keys:
        akeys = r.mapping("after_ready", keys["after_ready"],
                          ("mode", "restart_after_repair", "restart_interval"))
        if "mode" in akeys:
            after_ready = replace(after_ready, mode=r.choice("after_ready.mode", akeys["mode"],
                                                             ("exit", "watch")))
        if "restart_after_repair" in akeys:
            unit = r.string("after_ready.restart_after_repair", akeys["restart_after_repair"],
                            "none or a systemd unit name such as k3s.service")
            if unit != "none" and not _UNIT.match(unit):
                raise r.fail("after_ready.restart_after_repair", akeys["restart_after_repair"],
                             "expected none or a systemd unit name such as k3s.service")
            after_ready = replace(after_ready, restart_after_repair=None if unit == "none" else unit)
        if "restart_interval" in akeys:
            after_ready = replace(after_ready, restart_interval=r.timespan(
                "after_ready.restart_interval", akeys["restart_interval"]))
    metrics = base.metrics_textfile
    if "metrics" in keys:
        mkeys = r.mapping("metrics", keys["metrics"], ("textfile",))
        if "textfile" in mkeys:
            path = r.string("metrics.textfile", mkeys["textfile"],
                            "auto, none or an absolute path")
            if path not in ("none", METRICS_AUTO) and not (path.startswith("/")
                                                           and path.endswith(".prom")):
                raise r.fail("metrics.textfile", mkeys["textfile"],
                             "expected auto, none or an absolute path ending in .prom")
            metrics = None if path == "none" else path
    return Config(settle, timeout, on_timeout, watch, stages, compat, after_ready, metrics, source)


def default_config_text() -> str:
    from importlib import resources
    return resources.files("fwgate").joinpath("default.yaml").read_text()


@functools.cache
def defaults() -> Config:
    """The shipped, annotated file is the one source of the defaults."""
    return parse_config(default_config_text(), "<defaults>", base=Config())


def load_config(path: str) -> Config:
    """Read and parse a config file, refusing ones others could have rewritten."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            if os.geteuid() == 0:  # like sshd's StrictModes: only root may write it
                raise ConfigError(f"{path}: refusing a config file writable by others than root "
                                  f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})")
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        raise ConfigError(f"{path}: contains NUL bytes; not a config file")
    return parse_config(text, path)

