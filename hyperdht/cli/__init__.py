"""The commands: ``hyperdht`` (with ``hyperdht demo``) and ``hyperdht-swarm``.

Only this package imports everything; nothing in the library imports it.

* :mod:`.node` -- ``hyperdht``: a node, ``--announce``, ``--query``; and the
  ``demo`` subcommand's dispatch;
* :mod:`.swarm` -- ``hyperdht-swarm``: many nodes in one process;
* :mod:`.demo` -- ``hyperdht demo``: a hole punch through an emulated NAT;
* :mod:`.options` -- the one parser builder, argument types, config files;
* :mod:`.runtime` -- how a command starts nodes, runs background tasks,
  catches signals and turns errors into exit statuses;
* :mod:`.output` -- logging setup, address formatting, output lines;
* :mod:`.errors` -- the two command errors and their exit statuses.

The entry points are ``hyperdht.cli.node:main`` and
``hyperdht.cli.swarm:main``; ``python -m hyperdht`` runs the first. This
module imports none of them, so ``python -m hyperdht.cli.swarm`` works too.
"""
