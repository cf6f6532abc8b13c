from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt import views as jwt_views

from accounts import services
from accounts.api.serializers import RegisterSerializer, UserSerializer
from accounts.api.throttling import AuthRateThrottle


@extend_schema(request=RegisterSerializer, responses={201: UserSerializer})
@api_view(["POST"])
@permission_classes([AllowAny])
@throttle_classes([AuthRateThrottle])
def register(request: Request) -> Response:
    serializer = RegisterSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        user = services.user_sign_up(**serializer.validated_data)
    except services.UsernameTaken as taken:
        raise ValidationError({"username": [str(taken)]}) from None
    return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenObtainView(jwt_views.TokenObtainPairView):
    throttle_classes = [AuthRateThrottle]


class TokenRefreshView(jwt_views.TokenRefreshView):
    throttle_classes = [AuthRateThrottle]


class LogoutView(jwt_views.TokenBlacklistView):
    """Retires a refresh token: it can no longer be refreshed."""

    throttle_classes = [AuthRateThrottle]
