"""Coverage-guided fuzz targets for every datagram entry point of hyperdht.

One target per sans-I/O core: :mod:`fuzz.target_udprequest` (the request
layer), :mod:`fuzz.target_dhtrpc` (the DHT core) and
:mod:`fuzz.target_discovery` (peer discovery over the DHT core). Each has a
``run_one(data)`` entry function that turns the input into a short program
(datagrams, source addresses, time steps, local operations), runs it on a
core with a virtual clock and checks invariants after every step; it raises
:class:`fuzz.harness.InvariantError` on a broken invariant and lets any other
escaping exception through (that is a finding too).

``python fuzz/run.py`` runs them under atheris (see fuzz/README.md); the
entry functions need nothing but hyperdht, so tests/test_fuzz_targets.py
runs them over the seed corpus in every tox env.
"""
