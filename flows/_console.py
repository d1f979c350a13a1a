"""Console hygiene for the CLI: expected errors print their message, not a traceback."""

from __future__ import annotations

import logging

__all__ = ["hide_expected_tracebacks"]


class _DropTraceback(logging.Filter):
    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info = None
            record.exc_text = None
        return True


def hide_expected_tracebacks(expected: tuple[type[BaseException], ...]) -> None:
    """Strip tracebacks of ``expected`` errors from every configured log handler.

    Prefect logs each failed task with its traceback; for errors whose message
    already names the file, line and column, that is noise for the user.
    """
    drop = _DropTraceback(expected)
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.startswith("prefect")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _DropTraceback) for f in handler.filters):
                handler.addFilter(drop)
