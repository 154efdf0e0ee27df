"""User-facing errors: one line, naming the file, line or key; the CLI turns them into exit code 2."""

from __future__ import annotations

import os


class UserError(Exception):
    """Bad input a user can fix (file, config, flag); printed as one line, exit code 2."""

    exit_code = 2


class InputError(UserError):
    """A malformed input file: the message reads `path:line: reason`."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path, self.line, self.reason = os.fspath(path), line, reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable, so that it survives a worker process (Dataset.map with num_proc > 1)
        return type(self), (self.path, self.line, self.reason)


class ConfigError(UserError):
    """A bad configuration key or value: the message names the full dotted key and its source."""
