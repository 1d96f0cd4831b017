"""Errors a user can cause or meet, each with the exit code the CLI returns."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3
EXIT_ENVIRONMENT = 4
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug; not a verdict, so systemd restarts the unit
EXIT_CONFIG = 78  # EX_CONFIG, so systemd's RestartPreventExitStatus can name it


class FwgateError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = EXIT_FAILED


class ConfigError(FwgateError):
    exit_code = EXIT_CONFIG


class EnvironmentProblem(FwgateError):
    """No permission, no nf_tables, a missing namespace, no D-Bus ..."""

    exit_code = EXIT_ENVIRONMENT


class UsageError(FwgateError):
    exit_code = EXIT_USAGE
