"""Key management: a KMS per node serving ETSI GS QKD 014 V1.1.1 over mutual TLS.

Python API (used by ``qdnet demo``):

* :func:`qdnet.kms.pki.create_pki` — CA, KME and SAE certificates in a folder.
* :func:`qdnet.kms.link.start_link` — two peered KMS nodes on free ports (in-process threads),
  a :class:`qdnet.kms.link.KMSLink` with ``.ingest(folder_a, folder_b)``, ``.client(sae)``,
  ``.stop()``; :func:`qdnet.kms.link.spawn_kms` runs one node as a subprocess instead.
* :class:`qdnet.kms.client.SAEClient` — ``status``, ``enc_keys``, ``dec_keys`` over mTLS.
"""
