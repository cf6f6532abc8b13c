"""Settings for `make bench`: production settings with a cheap password hash.

Every benchmark run registers thousands of fresh users (the load generator
gives each socket its own account). With Django's default PBKDF2 at 1,000,000
iterations each registration and token costs ~0.3 s of CPU, so setting up a
1,000-member room would take ten minutes of hashing and measure nothing of
the chat path. The hash below has the seed peer's cost (1,000 iterations).
Everything else is chatsite.settings as the environment configures it.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chatsite.settings import *  # noqa: F403


class BenchPasswordHasher(PBKDF2PasswordHasher):
    # Same algorithm name, so hashes made by either hasher verify with both.
    iterations = 1000


PASSWORD_HASHERS = ["bench.settings.BenchPasswordHasher"]
