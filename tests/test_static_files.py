"""Static files through chatsite.static: WhiteNoise's middleware in Django's
asynchronous chain, so that an ASGI request hops to a thread only for its
view (or a file's read), never back."""

import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from tests.servers import BASE_DIR

CHAT_JS = (BASE_DIR / "static" / "js" / "chat.js").read_bytes()


def middleware_chain(handler) -> list:
    """The middleware instances of a handler's chain, outermost first."""
    chain, step = [], handler._middleware_chain
    while step is not None:
        step = getattr(step, "__wrapped__", step)  # convert_exception_to_response
        if not hasattr(step, "get_response"):
            break  # the view's resolver: the end of the chain
        chain.append(step)
        step = step.get_response
    return chain


def test_every_middleware_runs_in_the_async_chain_under_asgi():
    chain = middleware_chain(ASGIHandler())
    names = [f"{type(m).__module__}.{type(m).__name__}" for m in chain]
    assert names == settings.MIDDLEWARE
    assert [name for name, m in zip(names, chain, strict=True) if not iscoroutinefunction(m)] == []


@pytest.mark.asyncio
async def test_a_static_file_is_served_to_an_async_request(async_client):
    response = await async_client.get("/static/js/chat.js")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == CHAT_JS  # the file's own iterator


@pytest.mark.asyncio
async def test_other_paths_go_on_down_the_async_chain(async_client):
    response = await async_client.get("/static/js/no-such-file.js")
    assert response.status_code == 404


def test_a_static_file_is_served_to_a_sync_request(client):
    response = client.get("/static/js/chat.js")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == CHAT_JS
