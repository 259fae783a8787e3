"""An in-memory UDP network with a virtual clock, for tests and simulations.

A :class:`Network` holds hosts (public, or behind a :class:`NAT`), an event
heap and a virtual clock. A :class:`Host` is a driver backend: give it as
``backend=`` and the library's sockets become :class:`SimDriver` objects on
the simulated network. Blocking calls (``driver.wait(future, timeout)``,
events' ``wait``) run the event loop until what they wait for happens, so a
blocking API runs unchanged in a single thread, minutes of protocol in
milliseconds, and identically for a given seed::

    from hyperdht.dhtrpc import DHT
    from hyperdht.testing import Network

    net = Network(seed=1, latency=0.02, loss=0.01)
    boot = DHT(backend=net.host("198.18.0.1"), port=49737, ephemeral=True)

    nat = net.nat("203.0.113.1", filtering="port-restricted")
    peer = DHT(backend=net.host("10.0.0.2", nat=nat), bootstrap=["198.18.0.1:49737"])
    peer.ready()                          # runs the network, on its clock only
    peer.ping(("198.18.0.1", 49737))      # Address(host='203.0.113.1', port=20000)

    net.run_for(60.0)                     # a virtual minute of timers
    print(net.now, net.stats.delivered, net.stats.dropped_nat_filtered)

Drive a sans-I/O endpoint directly with ``driver = host.create_driver()``
and ``driver.start(endpoint)``; then ``net.step()``, ``net.run(until=t)``,
``net.run_for(seconds)`` or ``net.run_until(predicate, timeout)``.

The simulator is single-threaded and not re-entrant: the loop cannot be run,
nor a driver's blocking wait called, from inside one of its callbacks (a
datagram, a timer, or a function given to ``driver.spawn``): that raises
StateError (a RuntimeError). Exceptions raised by endpoints and callbacks
propagate out of ``run*``/``wait``, so a broken protocol fails the test
that drives it.
"""

from __future__ import annotations

from .driver import SimDriver, SimEvent
from .host import Host
from .nat import NAT, FilteringBehavior, MappingBehavior, NATMapping
from .network import Network, NetworkStats, ScheduledCall, TraceEvent

__all__ = [
    "Network",
    "Host",
    "NAT",
    "NATMapping",
    "MappingBehavior",
    "FilteringBehavior",
    "SimDriver",
    "SimEvent",
    "NetworkStats",
    "TraceEvent",
    "ScheduledCall",
]
