"""Error types. Every error a user can cause is a HarnessError: one line, a fix, an exit code.

The CLI prints ``error: <message>`` (plus `` (fix: <hint>)``) and exits with ``exit_code``;
tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130


class HarnessError(Exception):
    """A problem the user can fix; carries a one-line message and a hint."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Render as a single line: the message and, when known, how to fix it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (fix: {' '.join(self.hint.split())})"
        return text


class UsageError(HarnessError):
    """Bad command-line arguments or options."""


class ModelSpecError(HarnessError):
    """A model spec that cannot be parsed or resolved."""


class TaskError(HarnessError):
    """A task file that is malformed or refers to unknown names."""


class DataError(HarnessError):
    """Reference data that is missing or unusable."""


class PluginError(HarnessError):
    """A plugin failed to load, or registered something invalid."""


class RunStoreError(HarnessError):
    """A run directory that cannot be used (locked, corrupt, unwritable)."""

    exit_code = EXIT_RUNTIME


class BudgetExceeded(HarnessError):
    """A cost or token budget was reached; the run stopped and can be resumed."""

    exit_code = EXIT_RUNTIME


class BackendError(HarnessError):
    """Base for errors raised by a mimic backend while generating."""

    exit_code = EXIT_RUNTIME


class TransientBackendError(BackendError):
    """A failure worth retrying (timeout, connection reset, 5xx, malformed body)."""


class RateLimitedError(TransientBackendError):
    """The server asked us to slow down (429/503); ``retry_after`` is in seconds when given."""

    def __init__(self, message: str, retry_after: float | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure that retrying cannot fix (401, unknown model, bad request)."""
