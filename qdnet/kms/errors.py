"""The error a KMS answers an SAE with (spec §5: HTTP status, message, optional details)."""

from __future__ import annotations


class KMSError(Exception):
    """An error answered to an SAE: HTTP status, spec message and optional details."""

    def __init__(
        self, status: int, message: str, details: list[dict[str, object]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
