"""The errors a command reports: one line on stderr, then an exit status.

:class:`UsageError` (bad options, keys, addresses or config files) exits 2,
:class:`CommandError` (the command cannot do its job) exits 1; see
:func:`hyperdht.cli.runtime.run_main`.
"""

from __future__ import annotations

from ..errors import ArgumentError, HyperDHTError

__all__ = ["CommandError", "UsageError"]


class UsageError(ArgumentError):
    """Bad options, keys, addresses or config files: exit status 2. The
    message names the option or file."""


class CommandError(HyperDHTError):
    """The command could not do its job (e.g. a port in use): exit status 1."""
