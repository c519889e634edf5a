"""`GET /healthz` over a `HealthCheck`: the one answer every snapmux HTTP port gives probes.

200 `{"status": "ok"}` only when the check passes; otherwise 503 with the error shape every
endpoint uses plus `"status": "unavailable"`, so a probe's log says why (a missing ttrpc
socket, an unreadable address file, a daemon still starting or already stopping).
"""

from __future__ import annotations

import logging

from snapmux.adapters.http.messages import HttpResponse, json_response
from snapmux.domain.errors import DomainError
from snapmux.domain.ports import HealthCheck

log = logging.getLogger(__name__)

PATH = "/healthz"


async def healthz(check: HealthCheck | None) -> HttpResponse:
    """`None` checks nothing: the process answers, so it is up."""
    try:
        if check is not None:
            await check.check()
    except DomainError as error:
        return json_response(503, {"status": "unavailable", "error": str(error)})
    except Exception as error:  # noqa: BLE001 - a failing probe is an answer, never a 500
        log.exception("health check raised unexpectedly")
        return json_response(503, {"status": "unavailable", "error": f"health check failed: {error}"})
    return json_response(200, {"status": "ok"})
