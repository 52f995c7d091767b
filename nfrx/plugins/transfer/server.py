"""The transfer API, server side: ``/api/transfer`` routes over :mod:`.channels`.

``POST /api/transfer`` opens a channel; ``GET /api/transfer/{id}`` is its reader and ``POST
/api/transfer/{id}`` its writer. Either key may call them (:mod:`.access`). The reader's response
head goes out once both sides are there; the writer is answered when the reader has been handed its
last byte (200) or the transfer failed (502). A side for a channel another instance holds is
relayed there (:mod:`.homes`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from quart import Blueprint, Response, jsonify, request

from nfrx.plugins.transfer.access import authorize, refuse_head
from nfrx.plugins.transfer.channels import Side, TransferError, rfc3339_seconds
from nfrx.server.gateway import use_error_style
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from nfrx.plugins.transfer.channels import TransferChannels
    from nfrx.plugins.transfer.homes import TransferHomes
    from nfrx.server.gateway import Gateway


def http_error(exc: TransferError) -> HttpError:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return HttpError(exc.status, exc.code, exc.message, headers=headers)


def blueprint(gateway: Gateway, channels: TransferChannels, homes: TransferHomes) -> Blueprint:
    """The routes over ``channels``; ``homes``: where the channels of several instances live (a
    side may reach another instance than its channel's)."""
    bp = Blueprint("transfer", __name__, url_prefix="/api/transfer")

    @bp.before_request
    async def admit() -> None:
        use_error_style("plain")
        authorize(gateway, api=True, client=True)

    @bp.post("")
    async def create() -> Response:
        try:
            channel = channels.create()
        except TransferError as exc:
            raise http_error(exc) from exc
        await homes.register(channel, channels.ttl)
        return jsonify(
            {"channel_id": channel.id, "expires_at": rfc3339_seconds(channel.expires_wall)}
        )

    @bp.get("/<channel_id>")
    async def read(channel_id: str) -> Response:
        refuse_head()
        try:
            if channel_id not in channels and (home := await homes.elsewhere(channel_id)):
                return await homes.relay_read(home, channel_id)
            channel = channels.attach(channel_id, Side.READER)
            # Also covers a reader that leaves after this returns but before its body started.
            gateway.cleanups().append(functools.partial(channel.abandon, Side.READER))
            await channel.wait_ready()
        except TransferError as exc:
            raise http_error(exc) from exc
        response = Response(
            channel.read(),
            content_type="application/octet-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a transfer may take long; Quart's 60 s default would cut it
        return response

    @bp.post("/<channel_id>")
    async def write(channel_id: str) -> Response:
        try:
            if channel_id not in channels and (home := await homes.elsewhere(channel_id)):
                return await homes.relay_write(home, channel_id)
            channel = channels.attach(channel_id, Side.WRITER)
            gateway.cleanups().append(functools.partial(channel.abandon, Side.WRITER))
            await channel.wait_ready()
            size = await channel.write(request.body)
        except TransferError as exc:
            raise http_error(exc) from exc
        return jsonify({"status": "ok", "bytes": size})

    return bp
