"""``qdnet network up|down|status``: a trusted-node network run for real on one machine.

* :mod:`~qdnet.network.runtime.layout`: the working folder (PKI, KMS settings, link specs) and
  ``network.json``, the document every client reads;
* :mod:`~qdnet.network.runtime.state`: reading and writing ``network.json`` and other small files;
* :mod:`~qdnet.network.runtime.linkloop`: one link's key production (one process per link);
* :mod:`~qdnet.network.runtime.processes`: process identities, start, stop, liveness;
* :mod:`~qdnet.network.runtime.supervisor`: start every process, wait, shut everything down;
* :mod:`~qdnet.network.runtime.status`: pools, rates, relay counters and processes of a network.
"""
