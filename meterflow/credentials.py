"""Credentials of the principals the pipeline's processes act as.

Every process takes its credentials from settings, never from code: for a principal NAME (say
``kafka-loader``) the password is ``$METERFLOW_SECRET_KAFKA_LOADER`` when set, else the file
``NAME`` in the secrets directory (``$METERFLOW_SECRETS``, default ``var/secrets``), which
``infra/stack.sh up`` generates for the local stack (random, mode 0600, never committed).
A production deployment sets the variables from its secret store instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# settings.py builds client configs from these, so this module must not import it
REPO_ROOT = Path(__file__).resolve().parent.parent


def secrets_dir() -> Path:
    var = Path(os.environ.get("METERFLOW_VAR", REPO_ROOT / "var"))
    return Path(os.environ.get("METERFLOW_SECRETS", var / "secrets"))


def secret_variable(name: str) -> str:
    return "METERFLOW_SECRET_" + name.upper().replace("-", "_")


def secret(name: str) -> str:
    """The password of principal `name`; a clear error when neither source has it."""
    var = secret_variable(name)
    if var in os.environ:
        return os.environ[var]
    path = secrets_dir() / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise LookupError(
            f"no credential for {name}: set {var}, or start the local stack "
            f"(`make up` generates {path})"
        ) from None
