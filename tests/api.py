"""An API client that authenticates the way programs do: with a JWT."""

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken


def api_client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client
