"""The client's Namespace port over a ``DurableObjectNamespace`` binding, in a Worker."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ..engine._ports import WireResponse
from ..errors import TransportError
from ._workers import to_js, to_py

INTERNAL_ORIGIN = "https://workkit-workflow.internal"


class DurableObjectNamespaceClient:
    """The client's Namespace port over a ``DurableObjectNamespace`` binding."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse:
        stub = self._binding.get(self._binding.idFromName(name))
        url = INTERNAL_ORIGIN + path + ("?" + urlencode(dict(query)) if query else "")
        options: dict[str, Any] = {
            "method": method,
            # A JS object: raw stubs reject a Python dict here ("not of type
            # 'Sequence'"), the SDK's stub wrapper passes it through.
            "headers": to_js({"content-type": "application/json"}),
        }
        if body is not None:
            options["body"] = json.dumps(body, separators=(",", ":"))
        try:
            # Keyword form: Pyodide turns the keywords into the JS init object,
            # and the SDK's stub wrapper (workers.fetch) accepts only keywords.
            response = await stub.fetch(url, **options)
            status = int(to_py(response.status))
            text = to_py(await response.text()) or ""
        except Exception as exc:
            raise TransportError(f"the execution object did not answer: {exc}") from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            raise TransportError(
                f"the execution object answered {status} with non-JSON: {text[:200]!r}"
            ) from None
        return WireResponse(status, payload)


def namespace_from_binding(binding: Any) -> DurableObjectNamespaceClient:
    if not hasattr(binding, "idFromName"):
        raise TypeError(
            "create_durable_workflow() needs a Durable Object namespace binding (env.WORKFLOW_DO) "
            f"or a workkit_workflow.local.LocalNamespace, got {type(binding).__name__}"
        )
    return DurableObjectNamespaceClient(binding)
