"""The one launcher of Landlord clusters on this machine, for `make demo` (scripts/demo.py),
the end-to-end tests (tests/e2e) and the benchmarks (bench/).

It starts etcd, ``landlord-coordinator`` and ``landlord-agent`` as processes the way a user
does, labels what a cluster's agents start so it removes exactly its own containers, and
keeps every process's log for the tail shown when something fails. It is not part of the
installed ``landlord`` package: scripts/ is on the import path of scripts/demo.py (its own
directory), of the tests (tests/conftest.py) and of the benchmarks (each adds it).

- ``processes``: a child process with log and pid files; ``wait_for``; free ports;
- ``etcd``: a private etcd process, and clearing a prefix of a shared one;
- ``daemons``: the coordinator and agent processes; removing containers by label;
- ``cluster``: ``ControlPlane`` (etcd + coordinators), ``LocalCluster`` (+ real agents),
  stopping a cluster another process left running;
- ``load``: the HTTP load generator on every host's entry point;
- ``rollouts``: the `landlord` CLI, and following a rollout live from its record;
- ``report``: what the load saw, judged against the rollout records (pure);
- ``images``: the demo app's image names, built and pushed to the local registry.
"""
