"""A real loopback UDP socket that fails on demand: a fault-injection fixture.

Not part of the protocol library: the fault tests (``tests/test_faults.py``)
give it to a node as ``DHT(socket=FaultySocket.bind())`` to check what
every driver does when the network misbehaves. It is the documented
``socket=`` hook, so nothing private is patched, and every backend takes
it (it offers ``fileno()`` and ``setblocking()``, so the thread and asyncio
drivers select on it and the gevent driver waits for readability and calls
its own ``recvfrom``).

What it can do:

* :meth:`FaultySocket.fail_sends` makes the next ``count`` ``sendto`` calls
  (optionally only those to one address) raise ``OSError(err)``:
  ``errno.EAGAIN`` (a full send buffer; raised as BlockingIOError),
  ``ENOBUFS``, ``EMSGSIZE``, ``EPERM`` (a firewall rule), anything.
  The datagram is not sent.
* ``recverr=True`` turns on Linux ``IP_RECVERR`` (``IPV6_RECVERR``), so
  *real* ICMP errors surface on the socket: a datagram to a closed
  loopback port makes a later ``recvfrom`` (or ``sendto``) raise
  ConnectionRefusedError, and the ICMP report waits in the socket's error
  queue, which keeps the descriptor readable until it is read with
  ``recvmsg(..., MSG_ERRQUEUE)``. Without the option Linux reports no ICMP
  error on an unconnected UDP socket.
* :meth:`FaultySocket.fail_recvs` makes the next ``count`` ``recvfrom``
  calls raise ``OSError(err)`` (a synthetic ICMP error, for systems
  without ``IP_RECVERR``); it applies only once the descriptor is readable.

Counters (:attr:`FaultySocket.sends`, :attr:`~FaultySocket.recvs`,
:attr:`~FaultySocket.injected`) let a test check what happened without
sleeping. The socket is safe to use from the driver's receiver and from
callers at once.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["FaultySocket", "IP_RECVERR", "IPV6_RECVERR", "SEND_ERRNOS"]

#: The ``sendto`` errors the fault tests inject: a full send buffer, no
#: buffer space, a datagram too large, a firewall's refusal.
SEND_ERRNOS: tuple[int, ...] = (errno.EAGAIN, errno.ENOBUFS, errno.EMSGSIZE, errno.EPERM)

#: Linux socket options that queue ICMP errors on a UDP socket.
IP_RECVERR: int = getattr(_socket, "IP_RECVERR", 11)
IPV6_RECVERR: int = getattr(_socket, "IPV6_RECVERR", 25)


def _key(address: Any) -> tuple[str, int]:
    return (str(address[0]), int(address[1]))


class FaultySocket:
    """A bound UDP socket whose ``sendto``/``recvfrom`` raise on a schedule
    (see the module docstring). Wraps ``sock``, which it closes on
    :meth:`close`; :meth:`bind` makes one."""

    def __init__(self, sock: _socket.socket, *, recverr: bool = False) -> None:
        self._inner = sock
        self._lock = threading.Lock()
        self._send_rules: list[list[Any]] = []  # [err, remaining, (host, port) | None]
        self._recv_rules: list[list[int]] = []  # [err, remaining]
        #: ``sendto`` calls, failed ones included.
        self.sends = 0
        #: ``recvfrom`` calls, failed ones included (a receiver that spins
        #: on a readable socket shows up here).
        self.recvs = 0
        #: Errors raised on purpose, per ``errno`` (sends and receives).
        self.injected: Counter[int] = Counter()
        #: Called as ``on_send(data, address)`` after each datagram actually
        #: sent (under the driver's lock: keep it quick, e.g. an event's
        #: ``set``), so a test can wait for a request to be on the wire.
        self.on_send: Callable[[bytes, Any], object] | None = None
        #: Real errors the wrapped socket raised from ``recvfrom``/``sendto``
        #: (other than BlockingIOError), per ``errno``.
        self.real_errors: Counter[int] = Counter()
        if recverr:
            if sock.family == _socket.AF_INET6:
                sock.setsockopt(_socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(_socket.IPPROTO_IP, IP_RECVERR, 1)

    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0, *, recverr: bool = False) -> FaultySocket:
        """A new UDP socket bound to ``host:port`` (0: a free port; IPv6 if
        ``host`` contains a colon), wrapped. Raises OSError when binding
        fails."""
        family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            return cls(sock, recverr=recverr)
        except OSError:
            sock.close()
            raise

    # -- the schedule -----------------------------------------------------------

    def fail_sends(self, err: int, count: int = 1, *, to: Any = None) -> None:
        """Make the next ``count`` ``sendto`` calls (only those to ``to``,
        a ``(host, port)``, when given) raise ``OSError(err)`` without
        sending. Rules are consulted in the order they were added."""
        with self._lock:
            self._send_rules.append([err, count, None if to is None else _key(to)])

    def fail_recvs(self, err: int, count: int = 1) -> None:
        """Make the next ``count`` ``recvfrom`` calls raise ``OSError(err)``
        (the datagram waiting, if any, stays queued)."""
        with self._lock:
            self._recv_rules.append([err, count])

    def clear(self) -> None:
        """Drop every scheduled fault."""
        with self._lock:
            self._send_rules.clear()
            self._recv_rules.clear()

    @property
    def pending_faults(self) -> int:
        """Scheduled faults not raised yet."""
        with self._lock:
            sends: int = sum(r[1] for r in self._send_rules)
            return sends + sum(r[1] for r in self._recv_rules)

    def _take_send_fault(self, address: Any) -> int | None:
        with self._lock:
            self.sends += 1
            for rule in self._send_rules:
                if rule[2] is None or rule[2] == _key(address):
                    rule[1] -= 1
                    if rule[1] <= 0:
                        self._send_rules.remove(rule)
                    self.injected[rule[0]] += 1
                    err: int = rule[0]
                    return err
            return None

    def _take_recv_fault(self) -> int | None:
        with self._lock:
            self.recvs += 1
            if not self._recv_rules:
                return None
            rule = self._recv_rules[0]
            rule[1] -= 1
            if rule[1] <= 0:
                self._recv_rules.pop(0)
            self.injected[rule[0]] += 1
            return rule[0]

    # -- the socket ---------------------------------------------------------------

    def sendto(self, data: bytes, address: Any, /) -> int:
        """Send ``data`` to ``address``, unless a scheduled fault raises
        ``OSError(err)`` instead; raises what the socket raises."""
        err = self._take_send_fault(address)
        if err is not None:
            raise OSError(err, os.strerror(err))
        try:
            sent: int = self._inner.sendto(data, address)
        except BlockingIOError:
            raise
        except OSError as exc:
            with self._lock:
                self.real_errors[exc.errno or 0] += 1
            raise
        on_send = self.on_send
        if on_send is not None:
            on_send(data, address)
        return sent

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        """The next datagram, unless a scheduled fault raises
        ``OSError(err)`` instead; raises what the socket raises
        (BlockingIOError, a real ConnectionRefusedError with ``recverr``)."""
        err = self._take_recv_fault()
        if err is not None:
            raise OSError(err, os.strerror(err))
        try:
            result: tuple[bytes, Any] = self._inner.recvfrom(bufsize)
        except BlockingIOError:
            raise
        except OSError as exc:
            with self._lock:
                self.real_errors[exc.errno or 0] += 1
            raise
        return result

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /) -> Any:
        """The wrapped socket's ``recvmsg`` (e.g. to read the error queue)."""
        return self._inner.recvmsg(bufsize, ancbufsize, flags)

    def error_queue_length(self) -> int:
        """Read and discard the ICMP reports waiting in the error queue
        (``recverr``); returns how many there were."""
        n = 0
        while True:
            try:
                self._inner.recvmsg(1, 1024, _socket.MSG_ERRQUEUE | _socket.MSG_DONTWAIT)
            except OSError:
                return n
            n += 1

    def getsockname(self) -> Any:
        """The wrapped socket's local address."""
        return self._inner.getsockname()

    def fileno(self) -> int:
        """The wrapped socket's descriptor (-1 once closed)."""
        fd: int = self._inner.fileno()
        return fd

    @property
    def family(self) -> int:
        """The wrapped socket's address family."""
        family: int = self._inner.family
        return family

    def setblocking(self, flag: bool) -> None:
        """Set the wrapped socket's blocking mode."""
        self._inner.setblocking(flag)

    def settimeout(self, timeout: float | None) -> None:
        """Set the wrapped socket's timeout."""
        self._inner.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """The wrapped socket's timeout."""
        timeout: float | None = self._inner.gettimeout()
        return timeout

    def setsockopt(self, level: int, option: int, value: Any, /) -> None:
        """The wrapped socket's ``setsockopt`` (a per-datagram TTL uses it)."""
        self._inner.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, /) -> int:
        """The wrapped socket's ``getsockopt``."""
        value: int = self._inner.getsockopt(level, option)
        return value

    def close(self) -> None:
        """Close the wrapped socket."""
        self._inner.close()

    def __enter__(self) -> FaultySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.fileno() < 0:
            return f"<{type(self).__name__} closed>"
        host, port = self.getsockname()[:2]
        return f"<{type(self).__name__} {host}:{port} pending={self.pending_faults}>"
