from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.core.exceptions import ValidationError

from accounts import services


class SignUpForm(UserCreationForm):
    """Django's sign-up form (username rules, password validators), saved by the service."""

    def save(self, commit: bool = True):
        return services.user_sign_up(
            username=self.cleaned_data["username"], password=self.cleaned_data["password1"]
        )


class AccountChangeForm(UserChangeForm):
    """The admin's account form: a new name may not differ from another
    account's only in case (the database's index would refuse it)."""

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        others = get_user_model().objects.exclude(pk=self.instance.pk)
        if others.filter(username__iexact=username).exists():
            raise ValidationError(services.USERNAME_TAKEN, code="unique")
        return username
