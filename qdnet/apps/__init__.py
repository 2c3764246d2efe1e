"""Applications on quantum keys: the end-to-end demo (``chain``) and ``qdnet app``: WireGuard
(``wireguard``), IPsec with IKEv2 PPKs (``ipsec``) and TLS 1.3 external PSKs (``tls_psk``), keyed
by the KMS (``keys``) through a key rotation (``rotation``) over an authenticated control channel
(``control``), optionally hybrid with ML-KEM (``hybrid``); options in ``options``."""
