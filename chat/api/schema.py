"""OpenAPI schema additions: the error bodies every endpoint may answer with."""

ERROR_RESPONSES = {
    "400": "Invalid input: `code` and `detail`, or a message list per field.",
    "401": "Not authenticated: no token or session, or an invalid one.",
    "403": "Authenticated, but not allowed to do this.",
    "404": "No such resource (private rooms are not found by non-members).",
    "405": "Method not allowed.",
    "409": "Conflicts with the current state (an existing slug, the owner leaving).",
    "415": "Unsupported media type: send JSON.",
    "429": "Throttled: retry after the `Retry-After` header's seconds.",
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
    "required": ["code"],
    "additionalProperties": True,
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: document the error responses of
    every operation (they are all JSON from chat.api.errors.exception_handler)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path in result.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                )
    return result
