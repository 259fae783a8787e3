"""Command-line options: the one parser builder, argument types, config files.

Every command builds its parser with :func:`new_parser` (errors are raised
as :class:`~hyperdht.cli.errors.UsageError`, one line, never printed by
argparse) and adds the options they share with :func:`add_host`,
:func:`add_port`, :func:`add_bootstrap` and :func:`add_backend`, so an option
means, checks and says the same in every command. Backend names come from
:data:`hyperdht.drivers.BACKENDS`.

A config file (:func:`load_config`, JSON or YAML) holds long option names
as keys; a command gives the kind of value each key takes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..addressing import DEFAULT_PORT, parse_address
from ..drivers import BACKENDS
from .errors import UsageError

__all__ = [
    "ConfigKind",
    "OneLineParser",
    "add_backend",
    "add_bootstrap",
    "add_host",
    "add_port",
    "load_config",
    "new_parser",
    "parse_bootstrap",
    "parse_key",
    "port_arg",
    "positive_int_arg",
    "rate_arg",
    "seconds_arg",
]

_N = TypeVar("_N", int, float)

#: What a config key holds: ``"int"``, ``"port"`` (0-65535), ``"positive"``
#: (an int of at least 1), ``"bool"``, ``"ephemeral"`` (a bool or
#: ``"auto"``/``"true"``/``"false"``), ``"str"``, ``"strs"`` (a string or a
#: list of strings), ``"backend"`` (one of :data:`BACKENDS`) or ``"rate"``
#: (a positive number).
ConfigKind = str


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, raised as UsageError
    (``--help`` and ``--version`` still print and exit 0)."""

    def error(self, message: str) -> NoReturn:
        """Raise UsageError(``message``) instead of printing usage and exiting."""
        raise UsageError(message)


def new_parser(
    prog: str,
    description: str,
    *,
    usage: str | None = None,
    epilog: str | None = None,
    suppress_defaults: bool = False,
) -> OneLineParser:
    """A parser for one command (``description`` is wrapped, ``epilog``
    printed as written). With ``suppress_defaults`` an option left out is
    absent from the namespace, so that a config file can fill it in."""
    return OneLineParser(
        prog=prog,
        usage=usage,
        description=description,
        epilog=epilog,
        # An epilog is laid out by hand (a list of subcommands): keep it so.
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )


# -- argument types ------------------------------------------------------------


def _number(text: str, kind: type[_N], what: str) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def port_arg(text: str) -> int:
    """argparse type: a port number 0-65535."""
    port = _number(text, int, "a port number")
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def positive_int_arg(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds_arg(text: str) -> float:
    """argparse type: a positive number of seconds."""
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def rate_arg(text: str) -> float:
    """argparse type: a positive, finite number (a rate per second)."""
    value = _number(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_key(text: str, what: str = "key") -> bytes:
    """A 32-byte key from 64 hex characters; raises UsageError naming ``what``."""
    if not isinstance(text, str):
        raise UsageError(f"{what}: expected 64 hex characters, got {text!r}")
    value = text.strip()
    if len(value) != 64:
        raise UsageError(f"{what}: expected 64 hex characters (32 bytes), got {text!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{what}: not hexadecimal: {text!r}") from None


def parse_bootstrap(values: Iterable[str], what: str = "--bootstrap") -> tuple[str, ...]:
    """Split comma-separated entries and check each ``host[:port]`` (a bare
    host means port 49737). No name is resolved here. Raises UsageError."""
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise UsageError(f"{what}: expected 'host:port' strings, got {value!r}")
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                parse_address(part, what=what, default_port=DEFAULT_PORT)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            out.append(part)
    return tuple(out)


# -- the shared options --------------------------------------------------------

# ``group`` is a parser or an argument group; ``extra`` may set ``default``
# (left out: the parser's default, absent with ``suppress_defaults``).


def add_host(group: Any, help: str, **extra: Any) -> None:
    """``--host HOST``: the address to bind."""
    group.add_argument("--host", metavar="HOST", help=help, **extra)


def add_port(group: Any, help: str, **extra: Any) -> None:
    """``-p/--port PORT``: a UDP port, 0-65535."""
    group.add_argument("-p", "--port", type=port_arg, metavar="PORT", help=help, **extra)


def add_bootstrap(group: Any, help: str, **extra: Any) -> None:
    """``-b/--bootstrap HOST[:PORT]``, repeatable (check the values with
    :func:`parse_bootstrap`)."""
    group.add_argument(
        "-b", "--bootstrap", action="append", metavar="HOST[:PORT]", help=help, **extra
    )


def add_backend(group: Any, **extra: Any) -> None:
    """``--backend NAME``, one of :data:`hyperdht.drivers.BACKENDS`."""
    group.add_argument("--backend", choices=BACKENDS, help="I/O driver (default: thread)", **extra)


# -- config files --------------------------------------------------------------

_WANTED = {
    "int": "an integer",
    "port": "an integer",
    "positive": "an integer",
    "bool": "true or false",
    "ephemeral": "true, false or auto",
    "str": "a string",
    "backend": "a string",
    "strs": "a string or a list of strings",
    "rate": "a positive number",
}


def load_config(path: str, kinds: Mapping[str, ConfigKind]) -> dict[str, Any]:
    """Read a config file (.json, .yaml or .yml) into a dict of option
    values, checking each key against ``kinds`` (see :data:`ConfigKind`).
    Raises UsageError naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise UsageError(f"config file {path}: unsupported extension (use .json, .yaml or .yml)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"config file {path}: cannot read: {reason}") from None
    data: Any
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"config file {path}: invalid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise UsageError(
                f"config file {path}: reading YAML needs PyYAML (pip install hyperdht[yaml])"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise UsageError(f"config file {path}: invalid YAML: {reason}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: expected a mapping of options at the top level")
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = kinds.get(key) if isinstance(key, str) else None
        if kind is None:
            known = ", ".join(sorted(kinds))
            raise UsageError(f"config file {path}: unknown key {key!r} (known: {known})")
        out[key] = _checked(path, key, kind, value)
    return out


def _checked(path: str, key: str, kind: ConfigKind, value: Any) -> Any:
    if kind in ("int", "port", "positive"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "ephemeral":
        ok = isinstance(value, bool) or value in ("auto", "true", "false")
    elif kind == "rate":
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 < value < float("inf")
        )
    elif kind in ("str", "backend"):
        ok = isinstance(value, str)
    else:  # "strs"
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not ok:
        raise UsageError(f"config file {path}: {key!r} must be {_WANTED[kind]}, got {value!r}")
    if kind == "port" and not 0 <= value < 65536:
        raise UsageError(f"config file {path}: {key!r} must be 0-65535, got {value}")
    if kind == "positive" and value < 1:
        raise UsageError(f"config file {path}: {key!r} must be at least 1, got {value}")
    if kind == "backend" and value not in BACKENDS:
        raise UsageError(f"config file {path}: {key!r} must be one of {BACKENDS}, got {value!r}")
    return value
