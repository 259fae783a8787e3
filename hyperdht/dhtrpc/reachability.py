"""Does an unsolicited datagram reach us? :class:`ReachabilityProber`.

A sans-I/O helper of :class:`~hyperdht.dhtrpc.core.DHTCore` that finds
out, with the ``dht-rpc@2.3.0`` wire protocol only, whether datagrams
from a node we never sent anything to reach our socket (so that others
can keep us in their routing tables). One *probe*:

1. ``_find_node`` to a node R of our routing table (a node we talk to),
   for a random target: R answers with up to 20 nodes.
2. Pick X among them: a node whose host we never sent a datagram to (the
   prober sees every datagram the core sends and remembers the last
   :data:`CONTACTED_LIMIT` hosts). Ask R to forward a ``_ping`` to X
   (``forwardRequest``, the hole-punch request). X answers straight to
   our address as R sees it. Its answer arriving is a *hit*: no NAT or
   firewall mapping could have let it in.
3. No answer: on a host without address translation, ping X directly.
   If X answers that, the probe is a *miss* (X was alive and answered;
   its first answer did not get to us); if not, the probe says nothing
   (*void*: X, or R's forwarding, is gone). Behind a NAT (or when we
   cannot tell) X is not contacted and silence is a miss: X's answer may
   have left an unreplied entry in a Linux NAT, which would make it remap
   our datagrams to X to another public port (tests/netns/NAT-REPORT.md),
   so nothing at all is sent to X for :data:`QUARANTINE` seconds (queries
   find it silent; the datagrams count as the drop reason
   ``reachability_quarantine``).

A probe whose X is sent anything else while it runs (a query walking
there, say) is void too. The verdict of a *run* (up to
:data:`PARALLEL` probes at a time, :data:`MAX_PROBES` in all, distinct R
and X):

* ``"reachable"`` at the first hit;
* ``"unreachable"`` when the run ends with at least
  :data:`MISSES_FOR_UNREACHABLE` misses and no hit;
* otherwise the run is inconclusive and the verdict stays as it was.

When the first pong shows no address translation (our address as seen
from outside is our socket's own, as on loopback, a public host or the
simulator's public hosts), the verdict is ``"reachable"`` at once, before
any probe; a run still checks it (a stateful firewall makes it
``"unreachable"``). A new outside address (a NAT that changed or a host
that moved) starts over from ``"unknown"``.

Runs: one after the first bootstrap, one whenever our outside address
changes, then one after a delay that depends on the verdict
(:data:`RERUN`) and doubles after each run with the same verdict, up to
:data:`RERUN_MAX`. A network too small to have a node we never contacted
stays ``"unknown"`` (for ``ephemeral="auto"``: ephemeral, the safe side).

Only a node with ``ephemeral="auto"`` probes (:attr:`ReachabilityProber.enabled`);
with an explicit ``True`` or ``False`` nothing is sent and the verdict
comes from the pongs alone (``"reachable"`` without address translation,
else ``"unknown"``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import messages
from ..datagram import Datagram
from ..errors import DecodeError
from ..ipencoding import ID_LENGTH, Address

if TYPE_CHECKING:
    # Annotations only: the core creates the prober and imports this module.
    from .core import DHTCore

__all__ = [
    "UNKNOWN",
    "REACHABLE",
    "UNREACHABLE",
    "VERDICTS",
    "PARALLEL",
    "MAX_PROBES",
    "MISSES_FOR_UNREACHABLE",
    "CONTACTED_LIMIT",
    "QUARANTINE",
    "RERUN",
    "RERUN_MAX",
    "ReachabilityProber",
]

log = logging.getLogger(__name__)

#: No verdict yet (or the last runs were inconclusive).
UNKNOWN = "unknown"
#: A datagram from a node we never sent to reached us.
REACHABLE = "reachable"
#: Nodes that answered us directly could not reach us unsolicited.
UNREACHABLE = "unreachable"
#: Every verdict, in the order above.
VERDICTS = (UNKNOWN, REACHABLE, UNREACHABLE)

#: Probes of one run in flight at once.
PARALLEL = 3
#: Probes one run starts at most.
MAX_PROBES = 6
#: Misses (and no hit) that make a run's verdict ``"unreachable"``.
MISSES_FOR_UNREACHABLE = 3
#: Hosts we sent to that the prober remembers (oldest forgotten first).
CONTACTED_LIMIT = 4096
#: Seconds nothing is sent to the X of a silent probe behind a NAT: more
#: than Linux conntrack keeps an unreplied UDP entry (30 s by default).
QUARANTINE = 90.0
#: Seconds from the end of a run to the next one, by the verdict.
RERUN = {REACHABLE: 600.0, UNREACHABLE: 120.0, UNKNOWN: 30.0}
#: The delay doubles after each run with an unchanged verdict, up to this.
RERUN_MAX = {REACHABLE: 3600.0, UNREACHABLE: 1800.0, UNKNOWN: 900.0}


class _Probe:
    __slots__ = ("referrer", "target", "void")

    def __init__(self, referrer: Address) -> None:
        self.referrer = referrer
        self.target: Address | None = None
        self.void = False


class ReachabilityProber:
    """The reachability state of one core (see the module docstring).

    The core feeds it: :meth:`sent` with every batch of datagrams it sends,
    :meth:`observed_changed` with each new outside address, :meth:`schedule`
    after the first bootstrap, and :meth:`handle_timer` when
    :attr:`next_run` is due. ``on_verdict(verdict)`` runs on each change.
    """

    def __init__(self, core: DHTCore, rng: random.Random) -> None:
        self._core = core
        self._rng = rng
        #: False: no probes (explicit ``ephemeral=True``/``False``); the
        #: verdict then only comes from the first pong.
        self.enabled = True
        #: The current verdict: one of :data:`VERDICTS`.
        self.verdict = UNKNOWN
        #: When the next run is due (None: none scheduled; ``-inf``: at once).
        self.next_run: float | None = None
        #: Called with the new verdict when it changes (the core's hook).
        self.on_verdict: Callable[[str], None] | None = None
        #: Also called with each new verdict, after :attr:`on_verdict`.
        self.listeners: list[Callable[[str], None]] = []
        # Hosts we sent to, oldest first (a plain dict: an OrderedDict
        # costs a linked-list node and a slot array more per host).
        self._contacted: dict[str, None] = {}
        # X host -> its probe, while the forwarded ping to it is in flight.
        self._watching: dict[str, _Probe] = {}
        self._running = False
        self._started = 0
        self._active = 0
        self._hits = 0
        self._misses = 0
        self._used: set[str] = set()
        self._delay: float | None = None
        self._last: str | None = None
        # X host -> until when nothing is sent to it; and the latest time
        # the prober was told (sent() has none of its own).
        self._quarantine: dict[str, float] = {}
        self._now = -math.inf

    # -- what the core calls ------------------------------------------------

    def sent(self, out: list[Datagram]) -> list[Datagram]:
        """Remember the hosts of datagrams about to be sent (a probe whose
        X is among them becomes void); returns ``out`` without those to a
        quarantined host (see :data:`QUARANTINE`)."""
        if self._quarantine:
            out = self._filter(out)
        contacted = self._contacted
        for _data, addr, _opts in out:
            host = addr.host
            if host in contacted:
                continue
            contacted[host] = None
            if len(contacted) > CONTACTED_LIMIT:
                del contacted[next(iter(contacted))]
            probe = self._watching.pop(host, None)
            if probe is not None:
                probe.void = True
        return out

    def _filter(self, out: list[Datagram]) -> list[Datagram]:
        quarantine = self._quarantine
        now = self._now
        for host, until in list(quarantine.items()):
            if now >= until:
                del quarantine[host]
        if not quarantine:
            return out
        kept = [d for d in out if d[1].host not in quarantine]
        if len(kept) != len(out):
            self._core.stats.drops["reachability_quarantine"] += len(out) - len(kept)
        return kept

    def contacted(self, host: str) -> bool:
        """True if we sent a datagram to ``host`` (as far as remembered)."""
        return host in self._contacted

    def observed_changed(self, natted: bool | None) -> None:
        """Our outside address changed (``natted``: whether it differs from
        our socket's address): start over, and run again at once."""
        self._delay = None
        self._set(REACHABLE if natted is False else UNKNOWN)
        if self.enabled and (self._core.bootstrapped or self.next_run is not None):
            self.next_run = -math.inf

    def schedule(self, delay: float = 0.0, *, now: float | None = None) -> None:
        """Run at ``now + delay`` (no ``now``: as soon as the core's timer
        fires, whatever the delay). Nothing when not :attr:`enabled`."""
        if self.enabled:
            self.next_run = -math.inf if now is None else now + delay

    def handle_timer(self, now: float) -> None:
        """Start the run that is due at ``now``, if any."""
        self._now = now
        if self.next_run is None or now < self.next_run:
            return
        self.next_run = None
        if self.enabled and not self._running:
            self._start(now)

    # -- runs ---------------------------------------------------------------

    def _start(self, now: float) -> None:
        core = self._core
        if core.observed is None and core.local_address is not None and len(core.table):
            # The bootstrap's pong was lost: ask again (its answer sets the
            # outside address, and a new run follows).
            for contact in core.table:
                core.ping(contact.address, now=now)
                break
        self._running = True
        self._started = self._active = self._hits = self._misses = 0
        self._used = set()
        self._fill(now)
        if self._active == 0:
            self._core.stats.reachability_probes["no_referrer"] += 1
            self._end(now)

    def _fill(self, now: float) -> None:
        core = self._core
        if core.closed:
            return
        own = core.observed.host if core.observed is not None else None
        contacts = [c for c in core.table if c.address.host not in self._used]
        self._rng.shuffle(contacts)
        for contact in contacts:
            if self._active >= PARALLEL or self._started >= MAX_PROBES:
                break
            if contact.address.host == own:
                continue
            self._used.add(contact.address.host)
            self._started += 1
            self._active += 1
            self._find(_Probe(contact.address), now)

    def _find(self, probe: _Probe, now: float) -> None:
        core = self._core
        target = bytes(self._rng.getrandbits(8) for _ in range(ID_LENGTH))
        request = messages.RpcRequest(command="_find_node", id=core.query_id, target=target)
        core.request(request, probe.referrer, lambda e, r, _s, t: self._found(probe, e, r, t), now)

    def _found(self, probe: _Probe, err: BaseException | None, res: Any, now: float) -> None:
        core = self._core
        x = None
        if err is None and res.nodes:
            try:
                candidates = core.node_codec.decode_list(res.nodes)
            except DecodeError:
                candidates = []
            own = core.observed.host if core.observed is not None else None
            for node in candidates:
                host = node.address.host
                if (
                    node.id != core.id
                    and host != own
                    and host not in self._contacted
                    and host not in self._watching
                    and host not in self._used
                ):
                    x = node.address
                    break
        if x is None or core.closed:
            core.stats.reachability_probes["no_candidate" if err is None else "void"] += 1
            self._probe_done(now)
            return
        probe.target = x
        self._used.add(x.host)
        self._watching[x.host] = probe
        core.stats.reachability_probes["sent"] += 1
        request = core.holepunch_request(x)
        core.request(
            request,
            probe.referrer,
            lambda e, _r, s, t: self._answered(probe, e, s, t),
            now,
            any_source=True,
        )

    def _answered(self, probe: _Probe, err: BaseException | None, src: Address, now: float) -> None:
        core = self._core
        x = probe.target
        assert x is not None
        if self._watching.get(x.host) is probe:
            del self._watching[x.host]
        if err is None and src.host == x.host and not probe.void:
            core.stats.reachability_probes["hit"] += 1
            self._hits += 1
            log.debug("reachability: %s answered unsolicited (via %s)", x, probe.referrer)
            self._set(REACHABLE)
            self._probe_done(now)
            return
        if probe.void or err is None:
            core.stats.reachability_probes["void"] += 1
            self._probe_done(now)
            return
        if core.natted is not False:
            # Behind a NAT, X's answer may have left an unreplied entry in
            # it (Linux conntrack): a datagram of ours to X now would leave
            # from a remapped port, and X would record that port (as our
            # announced address, say). So X is not contacted, nothing goes
            # to it for QUARANTINE seconds, and silence is a miss.
            self._quarantine[x.host] = now + QUARANTINE
            self._checked(None, now)
            return
        # Silence: was X alive? A direct ping (we may contact it now).
        ping = messages.RpcRequest(command="_ping", id=core.query_id)
        core.request(ping, x, lambda e, _r, _s, t: self._checked(e, t), now)

    def _checked(self, err: BaseException | None, now: float) -> None:
        if err is None:
            self._core.stats.reachability_probes["miss"] += 1
            self._misses += 1
        else:
            self._core.stats.reachability_probes["void"] += 1
        self._probe_done(now)

    def _probe_done(self, now: float) -> None:
        self._now = max(self._now, now)
        self._active -= 1
        if self._hits == 0 and self._misses < MISSES_FOR_UNREACHABLE:
            self._fill(now)
        if self._active == 0:
            self._end(now)

    def _end(self, now: float) -> None:
        self._running = False
        if self._hits:
            verdict = REACHABLE
        elif self._misses >= MISSES_FOR_UNREACHABLE:
            verdict = UNREACHABLE
        else:
            verdict = None  # inconclusive: keep what we have
        if verdict is not None:
            self._set(verdict)
        self._core.stats.reachability_probes["runs"] += 1
        key = self.verdict
        if self._last != key or self._delay is None:
            self._delay = RERUN[key]
        else:
            self._delay = min(self._delay * 2, RERUN_MAX[key])
        self._last = key
        if self.next_run is None:
            self.next_run = now + self._delay
        log.debug(
            "reachability run: %d hit(s), %d miss(es) of %d probe(s): %s; next in %.0f s",
            self._hits,
            self._misses,
            self._started,
            self.verdict,
            self._delay,
        )

    def _set(self, verdict: str) -> None:
        self._core.stats.reachability = verdict
        if verdict == self.verdict:
            return
        self.verdict = verdict
        log.info("reachability: %s", verdict)
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        for listener in list(self.listeners):
            try:
                listener(verdict)
            except Exception:
                log.exception("reachability listener %r raised", listener)
