from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
    path("accounts/", include("accounts.urls")),
    path("api/auth/", include("accounts.api.urls")),
    path("admin/", admin.site.urls),
]
