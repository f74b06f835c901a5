"""Google client construction without Application Default Credentials → one ConfigError line.

Without credentials a Google client raises `DefaultCredentialsError` from deep inside google-auth
(a 50-line traceback for a CLI user). Each adapter builds its client inside `google_credentials`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from errors import ConfigError

FIX = ("run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS), or work locally "
       "without APP_ENV=prod")


@contextlib.contextmanager
def google_credentials(service: str) -> Iterator[None]:
    """Translate missing Google credentials while building the client for `service`."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except DefaultCredentialsError:
        raise ConfigError(f"no Google credentials for {service}\nfix: {FIX}") from None
