"""Where the config comes from, read again on every reload: the file named by --config,
else /etc/fwgate.yaml when it exists, else the built-in defaults (every key is optional)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..config import DEFAULT_PATH, Config, ConfigError, defaults, load_config
from .statefile import keep_last_good, last_good_path


@dataclass(frozen=True)
class ConfigSource:
    config_path: str | None = None   # --config; None: DEFAULT_PATH when there, else defaults

    def load(self) -> Config:
        """The config, validated; ConfigError (with key path and line) when it is bad."""
        if self.config_path is None and not os.path.exists(DEFAULT_PATH):
            return defaults()
        return load_config(self.config_path or DEFAULT_PATH)

    def reload(self) -> Config:
        """load(), and a file that parsed is kept as the guard's fallback."""
        config = self.load()
        keep_last_good(config.source)
        return config

    def load_for_guard(self, warn: Callable[[str], None]) -> tuple[Config, str | None]:
        """The guard never stops guarding for a bad file: (the config, None), else (the
        last good copy, else the built-in defaults; what was wrong), said through `warn`."""
        try:
            return self.reload(), None
        except ConfigError as exc:
            problem = str(exc)
        kept = last_good_path()
        try:
            fallback = load_config(kept) if kept and os.path.exists(kept) else defaults()
        except ConfigError:
            fallback = defaults()
        warn(f"{problem}; guarding with {fallback.source} instead: fix the file, then "
             f"`systemctl reload fwgate-guard`")
        return fallback, problem
