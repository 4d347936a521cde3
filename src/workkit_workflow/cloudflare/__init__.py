"""The Cloudflare runtime adapter: the Durable Object class, its storage and host
ports, the wire validation, and what a Worker needs to serve HTTP.

Public here: the request and response helpers a Worker's own ``fetch`` handler
uses (the example Worker, ``worker/entry.py``, is built on them)::

    from workkit_workflow.cloudflare import WireResponse, make_response, read_request

    async def on_fetch(request, env):
        wire = await read_request(request)  # a plain WireRequest: method, path, query, body, headers
        return make_response(WireResponse(200, {"path": wire.path}))

They work with the ``workers`` SDK's ``Request``/``Response`` and with raw JS ones.
The Durable Object class itself is :class:`workkit_workflow.WorkflowExecutionDO`.
"""

from ..engine._ports import WireRequest, WireResponse
from ._workers import make_response, make_text_response, read_request

__all__ = ["WireRequest", "WireResponse", "make_response", "make_text_response", "read_request"]
