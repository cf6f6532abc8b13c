from django.urls import path

from accounts.api import views

urlpatterns = [
    path("register/", views.register, name="api-register"),
    path("token/", views.TokenObtainView.as_view(), name="api-token"),
    path("token/refresh/", views.TokenRefreshView.as_view(), name="api-token-refresh"),
    path("logout/", views.LogoutView.as_view(), name="api-logout"),
]
