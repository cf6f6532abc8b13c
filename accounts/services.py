from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

USERNAME_TAKEN = "A user with that username already exists."


class UsernameTaken(Exception):
    """Another account has the name."""


def user_sign_up(*, username: str, password: str, email: str = "") -> AbstractBaseUser:
    """Create an account; callers have validated the username and password.

    Their check that the name is free runs before the insert, so two sign-ups
    for one name at once both pass it: the database's unique index decides,
    and the one that loses hears UsernameTaken rather than an IntegrityError.
    """
    users = get_user_model().objects
    try:
        with transaction.atomic():
            return users.create_user(username=username, password=password, email=email)
    except IntegrityError:
        if users.filter(username__iexact=username).exists():
            raise UsernameTaken(USERNAME_TAKEN) from None
        raise
