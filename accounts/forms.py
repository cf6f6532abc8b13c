from django.contrib.auth.forms import UserCreationForm

from accounts import services


class SignUpForm(UserCreationForm):
    """Django's sign-up form (username rules, password validators), saved by the service."""

    def save(self, commit: bool = True):
        return services.user_sign_up(
            username=self.cleaned_data["username"], password=self.cleaned_data["password1"]
        )
