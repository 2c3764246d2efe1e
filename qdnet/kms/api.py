"""ETSI GS QKD 014 V1.1.1 REST API (FastAPI) for SAEs, and the KMS-to-KMS peer API.

Every answer other than 200 is one of the spec's codes (400, 401, 503) with a JSON ``message``
(unknown paths and methods are answered 400 too, as the spec defines no other code). Requests
are parsed by hand so that malformed JSON, wrong JSON types, huge numbers or deep nesting give a
clean 400 with a clear message, never a 500; the OpenAPI document still describes the spec's
schemas (and is valid OpenAPI 3.1: every ``$ref`` resolves).

Order of checks on every request, so that a caller without a certificate costs almost nothing:
the caller's certificate (401), then ``Content-Length`` against ``limits.max_body_bytes`` (400,
before any byte of the body is read), then the body, read up to the limit and no further within
``timeouts.body_s``. An error answered before the body was read closes the connection. ``/docs``
and ``/openapi.json`` need a client certificate too (``docs_require_client_cert``).
"""

from __future__ import annotations

# ruff: noqa: N815  (field names are the spec's own)
import asyncio
import base64
import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from qdnet.kms.peer import (
    RELAY_COMPLETION_PATH,
    RELAY_PATH,
    parse_allocations,
    parse_segment_state,
)
from qdnet.kms.relay import parse_relay_completion, parse_relay_requests
from qdnet.kms.service import KMSError, KMSService, PeerLink
from qdnet.kms.tls import PEER_IDENTITY_KEY, identity_of, kme_identity

log = logging.getLogger("qdnet.kms.api")

PEER_MAX_BODY_BYTES = 1 << 24
"""Body limit of the KMS-to-KMS API (an allocation of 256 requests of 128 keys is ~2.5 MB)."""
SIMULATED_EXTENSION = "qdnet_simulated"
"""``key_container_extension`` / ``status_extension`` member: true when key material comes from
a simulated link (key-block format 2, ``simulated``), which is NOT secret."""
ROUTE_EXTENSION = "qdnet_route_type"
"""The one extension this KME understands (spec §6.2 example ``abc_route_type``): ``"direct"``
(no trusted node in between) can be met for a slave at a neighbour KME, never for one whose
keys are relayed (:mod:`qdnet.kms.relay`)."""

# --- spec data formats (documentation of the OpenAPI document) -------------------------------


class Status(BaseModel):
    """Spec Table 9."""

    model_config = ConfigDict(extra="allow")
    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int
    status_extension: dict[str, Any] | None = None


class KeyRequest(BaseModel):
    """Spec Table 10 (every item optional; an empty body means ``{}``)."""

    number: int | None = None
    size: int | None = None
    additional_slave_SAE_IDs: list[str] | None = None
    extension_mandatory: list[dict[str, Any]] | None = None
    extension_optional: list[dict[str, Any]] | None = None


class Key(BaseModel):
    """One key of a Key container: ``key`` is base64 (RFC 4648)."""

    key_ID: str = Field(description="UUID")
    key_ID_extension: dict[str, Any] | None = None
    key: str
    key_extension: dict[str, Any] | None = None


class KeyContainer(BaseModel):
    """Spec Table 11."""

    keys: list[Key]
    key_container_extension: dict[str, Any] | None = None


class KeyIDItem(BaseModel):
    """One entry of ``key_IDs``."""

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(BaseModel):
    """Spec Table 12."""

    key_IDs: list[KeyIDItem]
    key_IDs_extension: dict[str, Any] | None = None


class Error(BaseModel):
    """Spec Table 13."""

    message: str
    details: list[dict[str, Any]] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "Bad request format"},
    401: {"model": Error, "description": "Unauthorized"},
    503: {"model": Error, "description": "Error on server side"},
}


_NESTED_SCHEMAS: dict[str, Any] = {}
"""Models referenced from hand-written request bodies, added to ``components/schemas``."""


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _NESTED_SCHEMAS.update(schema.pop("$defs", {}))
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schema}},
        }
    }


# --- helpers ----------------------------------------------------------------------------------


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def error_response(
    status: int, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    """A spec Error body (Table 13)."""
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return _json(status, body)


Handler = Callable[..., Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Turn :class:`KMSError` into its answer and anything unexpected into a 503, never a 500."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except KMSError as err:
            return error_response(err.status, err.message, err.details)
        except Exception as err:
            log.error("internal error in %s: %s", fn.__name__, type(err).__name__)
            return error_response(503, "key data access error")

    return wrapper


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise KMSError(400, "request body is not valid JSON") from None
    except RecursionError:
        raise KMSError(400, "request body is nested too deeply") from None


class _DisconnectedError(Exception):
    """The client went away while its body was being read."""


async def read_body(
    scope: Mapping[str, Any], receive: Callable[..., Any], limit: int, timeout_s: float
) -> bytes:
    """The request body, read up to ``limit`` bytes and no further, within ``timeout_s``.

    ``Content-Length`` is checked first: a body announced too large is refused before any of it
    is read. Raises :class:`KMSError` (400) or :class:`_DisconnectedError`.
    """
    too_large = KMSError(400, f"request body is too large (at most {limit} bytes)")
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise KMSError(400, "invalid Content-Length")
            if int(value) > limit:
                raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _DisconnectedError
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise KMSError(400, f"request body not received within {timeout_s:g} s") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _query_int(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise KMSError(400, f"{name} shall be a positive integer")
    return int(raw)


def _check_extensions(mandatory: Any, optional: Any, relayed: bool) -> dict[str, Any]:
    """Handle ``extension_mandatory`` / ``extension_optional`` (spec Table 10, §6.2);
    ``relayed``: the keys would be relayed through trusted nodes (never ``"direct"``)."""
    echo: dict[str, Any] = {}
    for field_name, value in (("extension_mandatory", mandatory), ("extension_optional", optional)):
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise KMSError(400, f"{field_name} shall be an array of objects")
    unsupported: list[dict[str, Any]] = []
    unmet = False
    for ext in mandatory or []:
        for name, val in ext.items():
            if name != ROUTE_EXTENSION:
                unsupported.append({"extension_mandatory_unsupported": f"{name} is not supported"})
            elif val != "direct" or relayed:
                unmet = True
            else:
                echo[ROUTE_EXTENSION] = "direct"
    if unsupported:
        raise KMSError(400, "not all extension_mandatory parameters are supported", unsupported)
    if unmet:
        raise KMSError(400, "not all extension_mandatory request options could be met")
    for ext in optional or []:
        if ext.get(ROUTE_EXTENSION) == "direct" and not relayed:
            echo[ROUTE_EXTENSION] = "direct"
        # other optional extensions are ignored, as the spec allows (answer 200)
    return echo


def _b64(material: bytes) -> str:
    return base64.b64encode(material).decode("ascii")


class SAEHandlers:
    """The ETSI GS QKD 014 calls, independent of the web framework.

    ``state`` is the request's ``scope["state"]`` (it holds the TLS identity of the connection),
    ``params`` its query parameters. Each call returns ``(HTTP status, JSON body)`` or raises
    :class:`KMSError`. Both the FastAPI routes and the raw ASGI fast path use these, so their
    answers are the same byte for byte.
    """

    def __init__(self, service: KMSService) -> None:
        self.service = service
        self.tls = service.settings.tls
        self.saes = set(service.settings.saes)
        self.lim = service.settings.limits

    def caller(self, state: dict[str, Any]) -> str:
        sae = identity_of(
            state.get(PEER_IDENTITY_KEY), self.tls.sae_identity, self.tls.sae_uri_prefix
        )
        if sae is None:
            raise KMSError(401, "a valid SAE client certificate is required")
        if sae not in self.saes:
            raise KMSError(401, f"SAE {sae!r} is not served by this KME")
        return sae

    async def status(self, state: dict[str, Any], slave: str) -> dict[str, Any]:
        master = self.caller(state)
        return await self.service.status(master, slave)

    async def enc(
        self, state: dict[str, Any], slave: str, params: QueryParams | None, body: Any
    ) -> dict[str, Any]:
        """``enc_keys``: GET when ``params`` is given, else POST with the parsed ``body``."""
        lim = self.lim
        service = self.service
        master = self.caller(state)
        service.check_slave(master, slave)
        if params is not None:
            number = _query_int(params, "number")
            size = _query_int(params, "size")
            extra: Any = None
            mandatory: Any = None
            optional: Any = None
        else:
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise KMSError(400, "Key request shall be a JSON object")
            number = body.get("number")
            size = body.get("size")
            extra = body.get("additional_slave_SAE_IDs")
            mandatory = body.get("extension_mandatory")
            optional = body.get("extension_optional")
            for name, v in (("number", number), ("size", size)):
                if v is not None and not _is_int(v):
                    raise KMSError(400, f"{name} shall be an integer")
        number = 1 if number is None else number
        size = lim.key_size if size is None else size
        if not 1 <= number <= lim.max_key_per_request:
            raise KMSError(
                400,
                f"number shall be between 1 and max_key_per_request ({lim.max_key_per_request})",
            )
        if size % 8:
            raise KMSError(400, "size shall be a multiple of 8")
        if not lim.min_key_size <= size <= lim.max_key_size:
            raise KMSError(
                400,
                f"size shall be between min_key_size ({lim.min_key_size}) "
                f"and max_key_size ({lim.max_key_size})",
            )
        slaves = [slave]
        if extra is not None:
            if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
                raise KMSError(400, "additional_slave_SAE_IDs shall be an array of strings")
            if len(extra) > lim.max_SAE_ID_count:
                raise KMSError(
                    400,
                    f"additional_slave_SAE_IDs exceeds max_SAE_ID_count ({lim.max_SAE_ID_count})",
                )
            for s in extra:
                service.check_slave(master, s)
                if s in slaves:
                    raise KMSError(400, f"slave SAE ID {s!r} is listed more than once")
                slaves.append(s)
        echo = (
            _check_extensions(mandatory, optional, service.is_relayed(slaves))
            if mandatory is not None or optional is not None
            else None
        )
        cut, simulated = await service.enc_keys(master, slaves, number, size)
        out: dict[str, Any] = {"keys": [{"key_ID": k, "key": _b64(m)} for k, m in cut]}
        if simulated:
            echo = {**(echo or {}), SIMULATED_EXTENSION: True}
        if echo:
            out["key_container_extension"] = echo
        return out

    async def dec(self, state: dict[str, Any], master: str, ids: list[str]) -> dict[str, Any]:
        lim = self.lim
        if not ids:
            raise KMSError(400, "key_IDs shall list at least one key_ID")
        if len(ids) > lim.max_key_per_request:
            raise KMSError(
                400, f"at most max_key_per_request ({lim.max_key_per_request}) key_IDs per request"
            )
        if len(set(ids)) != len(ids):
            raise KMSError(400, "key_IDs lists a key_ID more than once")
        for k in ids:
            try:
                uuid.UUID(k)
            except ValueError:
                raise KMSError(400, "one or more keys specified are not found on KME") from None
        caller = self.caller(state)
        found = await self.service.dec_keys(master, caller, ids)
        out: dict[str, Any] = {
            "keys": [{"key_ID": k.key_id, "key": _b64(k.material)} for k in found]
        }
        if any(k.simulated for k in found):
            out["key_container_extension"] = {SIMULATED_EXTENSION: True}
        return out

    async def dec_get(
        self, state: dict[str, Any], master: str, params: QueryParams
    ) -> dict[str, Any]:
        self.caller(state)
        ids = params.getlist("key_ID")
        if len(ids) != 1:
            raise KMSError(400, "key_ID shall be given once (use POST for several keys)")
        return await self.dec(state, master, ids)

    async def dec_post(self, state: dict[str, Any], master: str, raw_body: bytes) -> dict[str, Any]:
        self.caller(state)
        body = _parse_json(raw_body)
        if not isinstance(body, dict):
            raise KMSError(400, "Key IDs shall be a JSON object")
        items = body.get("key_IDs")
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("key_ID"), str) for i in items
        ):
            raise KMSError(400, "key_IDs shall be an array of objects with a string key_ID")
        return await self.dec(state, master, [i["key_ID"] for i in items])


def _state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope.get("state", {})
    return state


def create_sae_app(service: KMSService) -> FastAPI:
    """The ETSI GS QKD 014 application for SAEs, as a FastAPI app (it serves the OpenAPI
    document; :func:`create_sae_asgi` puts the fast path for the key routes in front of it)."""
    h = SAEHandlers(service)
    settings = service.settings
    app = FastAPI(
        title=f"qdnet KME {settings.kme_id}: ETSI GS QKD 014 V1.1.1",
        version="1.1.1",
        description="Key delivery API (ETSI GS QKD 014 V1.1.1) over mutual TLS.",
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        message = "unknown request path" if exc.status_code == 404 else str(exc.detail)
        return error_response(400 if exc.status_code < 500 else 503, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, _exc: RequestValidationError) -> Response:
        return error_response(400, "malformed request")

    async def body_of(request: Request) -> bytes:
        h.caller(_state(request))  # 401 before any byte of the body is read
        return await read_body(
            request.scope, request.receive, h.lim.max_body_bytes, settings.timeouts.body_s
        )

    prefix = "/api/v1/keys/{sae_id}"

    @app.get(
        prefix + "/status",
        responses={200: {"model": Status}, **_ERRORS},
        summary="Get status",
    )
    @_guard
    async def get_status(sae_id: str, request: Request) -> Response:
        """Status of the keys this KME can deliver to the caller (master) for ``sae_id`` (slave)."""
        return _json(200, await h.status(_state(request), sae_id))

    @app.get(
        prefix + "/enc_keys",
        responses={200: {"model": KeyContainer}, **_ERRORS},
        summary="Get key (simple request: number and size as query parameters)",
    )
    @_guard
    async def get_enc_keys(
        sae_id: str,
        request: Request,
        number: str | None = Query(None, description="number of keys (integer as string)"),
        size: str | None = Query(None, description="key size in bits (integer as string)"),
    ) -> Response:
        """Keys for the caller (master) shared with slave ``sae_id``."""
        del number, size  # parsed by hand for spec error messages
        return _json(200, await h.enc(_state(request), sae_id, request.query_params, None))

    @app.post(
        prefix + "/enc_keys",
        responses={200: {"model": KeyContainer}, **_ERRORS},
        summary="Get key",
        openapi_extra=_body_doc(KeyRequest),
    )
    @_guard
    async def post_enc_keys(sae_id: str, request: Request) -> Response:
        """Keys for the caller (master) shared with slave ``sae_id`` (body: Key request)."""
        body = _parse_json(await body_of(request))
        return _json(200, await h.enc(_state(request), sae_id, None, body))

    @app.get(
        prefix + "/dec_keys",
        responses={200: {"model": KeyContainer}, **_ERRORS},
        summary="Get key with key IDs (simple request: one key_ID)",
    )
    @_guard
    async def get_dec_keys(sae_id: str, request: Request, key_ID: str | None = None) -> Response:
        """The key ``key_ID`` that master ``sae_id`` obtained for the caller (slave)."""
        del key_ID
        return _json(200, await h.dec_get(_state(request), sae_id, request.query_params))

    @app.post(
        prefix + "/dec_keys",
        responses={200: {"model": KeyContainer}, **_ERRORS},
        summary="Get key with key IDs",
        openapi_extra=_body_doc(KeyIDs),
    )
    @_guard
    async def post_dec_keys(sae_id: str, request: Request) -> Response:
        """The keys that master ``sae_id`` obtained for the caller (body: Key IDs)."""
        return _json(200, await h.dec_post(_state(request), sae_id, await body_of(request)))

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(_NESTED_SCHEMAS)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# --- raw ASGI fast path -------------------------------------------------------------------------

ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[None]]

_KEY_ROUTE = re.compile(r"^/api/v1/keys/(?P<sae_id>[^/]+)/(?P<op>status|enc_keys|dec_keys)$")
"""The three spec routes, matched exactly as Starlette matches ``/api/v1/keys/{sae_id}/...``."""

_JSON_TYPE = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


async def _send_json(
    send: Callable[..., Any], status: int, body: dict[str, Any], close: bool = False
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-length", str(len(data)).encode()), _JSON_TYPE]
    if close:  # the body was not read: do not parse it as the next request
        headers.append(_CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _send_error(send: Callable[..., Any], err: KMSError, close: bool = False) -> None:
    error: dict[str, Any] = {"message": err.message}
    if err.details:
        error["details"] = err.details
    await _send_json(send, err.status, error, close)


def create_sae_asgi(service: KMSService) -> ASGIApp:
    """The SAE application to serve: the key routes answered straight from ASGI (no routing,
    dependency injection or request objects per call), everything else (OpenAPI document, docs,
    unknown paths and methods) by the FastAPI app of :func:`create_sae_app`, behind the client
    certificate check when ``docs_require_client_cert``.

    The answers are the ones FastAPI gives: same handlers, same JSON, same headers.
    """
    fallback = create_sae_app(service)
    h = SAEHandlers(service)
    limit = service.settings.limits.max_body_bytes
    body_s = service.settings.timeouts.body_s
    docs_need_cert = service.settings.docs_require_client_cert

    async def app(
        scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await fallback(scope, receive, send)
            return
        state: dict[str, Any] = scope.get("state") or {}
        m = _KEY_ROUTE.match(scope["path"]) if not scope.get("root_path") else None
        method = scope["method"]
        if m is None or not (method == "GET" or (method == "POST" and m["op"] != "status")):
            ident = state.get(PEER_IDENTITY_KEY)
            if docs_need_cert and not (ident and ident.get("cn")):
                await _send_error(
                    send, KMSError(401, "a valid client certificate is required"), True
                )
                return
            await fallback(scope, receive, send)
            return
        sae_id, op = m["sae_id"], m["op"]
        unread = method == "POST"
        try:
            if method == "GET":
                params = QueryParams(scope["query_string"])
                if op == "enc_keys":
                    body = await h.enc(state, sae_id, params, None)
                elif op == "dec_keys":
                    body = await h.dec_get(state, sae_id, params)
                else:
                    body = await h.status(state, sae_id)
            else:
                h.caller(state)  # 401 before any byte of the body is read
                raw = await read_body(scope, receive, limit, body_s)
                unread = False
                if op == "enc_keys":
                    body = await h.enc(state, sae_id, None, _parse_json(raw))
                else:
                    body = await h.dec_post(state, sae_id, raw)
        except _DisconnectedError:
            return
        except KMSError as err:
            await _send_error(send, err, unread)
            return
        except Exception as err:
            log.error("internal error in %s %s: %s", method, op, type(err).__name__)
            await _send_json(send, 503, {"message": "key data access error"}, unread)
            return
        await _send_json(send, 200, body)

    return app


# --- KMS-to-KMS API ---------------------------------------------------------------------------


def _peer_check(service: KMSService, state: dict[str, Any]) -> PeerLink:
    """Only a neighbour KME, by the SAN URI of a KME certificate (never the CN, never an SAE);
    the link to that neighbour (each call works on that link's pool only)."""
    link = service.link(kme_identity(state.get(PEER_IDENTITY_KEY)))
    if link is None:
        raise KMSError(401, "only a peer KME may use this API")
    return link


async def _peer_blocks(link: PeerLink, raw: bytes) -> dict[str, Any]:
    body = _parse_json(raw)
    ids = body.get("block_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 10000:
        raise KMSError(400, "block_ids shall be an array of strings")
    return {"held": await link.peer_inventory(ids)}


async def _peer_allocations(link: PeerLink, raw: bytes) -> dict[str, Any]:
    try:
        items = parse_allocations(_parse_json(raw))
    except ValueError as err:
        raise KMSError(400, str(err)) from None
    return {"accepted": await link.apply_peer_allocations(items)}


async def _peer_consumed(link: PeerLink, raw: bytes) -> dict[str, Any]:
    try:
        state = parse_segment_state(_parse_json(raw))
    except ValueError as err:
        raise KMSError(400, str(err)) from None
    mine, count = await link.peer_consumed(state)
    return {"blocks": mine, "consumed": count}


async def _peer_relay(link: PeerLink, raw: bytes) -> dict[str, Any]:
    lim = link.service.limits
    try:
        reqs = parse_relay_requests(_parse_json(raw), lim.max_key_size, lim.max_key_per_request)
    except ValueError as err:
        raise KMSError(400, str(err)) from None
    return {"answers": await link.service.relay.on_requests(link, reqs)}


def _peer_relay_completion(service: KMSService, sender: str, raw: bytes) -> dict[str, Any]:
    try:
        relay_id, path, answer = parse_relay_completion(_parse_json(raw))
    except ValueError as err:
        raise KMSError(400, str(err)) from None
    return service.relay.on_completion(sender, relay_id, path, answer)


_PEER_ROUTES = {
    "/peer/v1/blocks": _peer_blocks,
    "/peer/v1/allocations": _peer_allocations,
    "/peer/v1/consumed": _peer_consumed,
    RELAY_PATH: _peer_relay,
}


def create_peer_asgi(service: KMSService) -> ASGIApp:
    """The KMS-to-KMS application: POST routes, only for a neighbour KME (relay completions:
    for any KME of the network); anything else is answered 400 (no documentation is served on
    this listener)."""
    body_s = service.settings.timeouts.body_s

    async def app(
        scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            return
        unread = True
        try:
            state = scope.get("state") or {}
            if scope["path"] == RELAY_COMPLETION_PATH and scope["method"] == "POST":
                # the far end of a relay this node originated: any KME of the network
                sender = kme_identity(state.get(PEER_IDENTITY_KEY))
                if sender is None or sender not in service.relay.graph:
                    raise KMSError(401, "only a KME of this network may send relay completions")
                raw = await read_body(scope, receive, PEER_MAX_BODY_BYTES, body_s)
                unread = False
                body = _peer_relay_completion(service, sender, raw)
            else:
                link = _peer_check(service, state)
                handler = _PEER_ROUTES.get(scope["path"])
                if handler is None or scope["method"] != "POST":
                    raise KMSError(400, "unknown request path")
                raw = await read_body(scope, receive, PEER_MAX_BODY_BYTES, body_s)
                unread = False
                body = await handler(link, raw)
        except _DisconnectedError:
            return
        except KMSError as err:
            await _send_error(send, err, unread)
            return
        except Exception as err:
            log.error("internal error in peer %s: %s", scope["path"], type(err).__name__)
            await _send_json(send, 503, {"message": "key data access error"}, unread)
            return
        await _send_json(send, 200, body)

    return app
