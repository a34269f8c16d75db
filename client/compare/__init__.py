"""``ciphergrad compare``: every algorithm encrypted through a real server next to its plaintext twin, on
the bundled real data, written as a report (compare.json, compare.md, PNG plots, index.html).

Modules: ``tasks`` (the registry: one entry per task), ``training`` and ``compute`` (what the tasks run),
``measure`` (timing and bytes), ``server`` (the server used, its peak memory), ``scaling`` (the rows sweep),
``report`` and ``plots`` (the output), ``command`` (the command line). ``client`` stays free of ``server``
imports: a server this package starts runs in a child process.
"""

from ciphergrad.client.compare.command import main

__all__ = ["main"]
