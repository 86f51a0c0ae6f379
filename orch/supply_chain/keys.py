"""Which key signs the SBOM and which one verifies it, from the configuration.

Production keeps the private key in a Prefect Secret block (``supply_chain.signing_key_block``), so it
never sits on a worker's disk; otherwise the keys directory is used, and a missing key pair is
generated there (short-lived keys, as the guide's CI makes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orch.config.schema import SupplyChainSettings
from orch.logging_config import get_logger
from orch.supply_chain.errors import SupplyChainError
from orch.supply_chain.paths import resolve
from orch.supply_chain.signing import (
    PRIVATE_KEY,
    generate_keys,
    load_private_key,
    load_public_key,
    private_key_from_pem,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

log = get_logger(__name__)


def signing_key(chain: SupplyChainSettings) -> RSAPrivateKey:
    if chain.signing_key_block:
        return private_key_from_pem(_secret_block_value(chain.signing_key_block).encode("utf-8"),
                                    f"Prefect Secret block {chain.signing_key_block!r}")
    keys = resolve(chain.keys_dir)
    if not (keys / PRIVATE_KEY).exists():
        log.warning("no SBOM signing key in %s: generated a new key pair (%s)", keys, generate_keys(keys))
    return load_private_key(keys)


def verification_key(chain: SupplyChainSettings) -> RSAPublicKey:
    if chain.signing_key_block:
        return signing_key(chain).public_key()
    return load_public_key(resolve(chain.keys_dir))


def _secret_block_value(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:
        raise SupplyChainError(f"Prefect Secret block {name!r} could not be loaded ({exc})") from None
    if not isinstance(value, str):
        raise SupplyChainError(f"Prefect Secret block {name!r} must hold the PEM private key as a string")
    return value
