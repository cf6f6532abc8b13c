"""An API client that authenticates the way programs do: with a JWT."""

from urllib.parse import urlsplit

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken


def api_client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


def path_of(url: str) -> str:
    """A page's `next` or `previous` link, as the test client asks for it."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
