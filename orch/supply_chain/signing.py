"""RSA-PSS (SHA-256) signatures over the SBOM: a detached signature file, or a JSF signature in the BOM.

Detached (the guide's ``sbom.sig``): a small JSON document holding the base64 signature over the SBOM's
exact bytes, plus two hints that let verification say *why* it failed: the SHA-256 of the signed bytes
and the fingerprint of the signing key. The hints are not trusted: a signature is accepted only when the
RSA-PSS check itself passes; they only turn "invalid" into "the SBOM changed" or "a different key".

Embedded: CycloneDX's ``signature`` property (JSON Signature Format, algorithm ``PS256``, the public key
as a JWK). JSF signs the canonical form of the document with the signature object present but without
its ``value``, and JSF defines that form as RFC 8785 (JCS), made here by the ``rfc8785`` package (numbers
as ECMAScript prints them, keys in UTF-16 order). The form is not recorded in the signature object:
JSF fixes it, and CycloneDX's JSF schema allows no other property there. Older ORCH versions signed
``json.dumps(sort_keys=True)`` output instead, which differs from JCS for floats and some keys; such
signatures still verify, with a warning to re-sign (:data:`LEGACY_WARNING`).

Keys: ``private_key.pem`` (PKCS#8, mode 0600, refused when group- or world-readable) and
``public_key.pem`` in a keys directory, or a PEM private key from a Prefect Secret block in production.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.supply_chain.errors import SupplyChainError, VerificationFailed
from orch.supply_chain.files import write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

PRIVATE_KEY = "private_key.pem"  # pragma: allowlist secret - a file name
PUBLIC_KEY = "public_key.pem"
ALGORITHM = "RSA-PSS-SHA256"
JSF_ALGORITHM = "PS256"
CANONICAL_FORM = "RFC 8785"
LEGACY_FORM = "legacy json.dumps(sort_keys=True)"
LEGACY_WARNING = "signed with the legacy canonical form; re-sign with `orch sbom sign --embed`"
KEY_BITS = 3072


def generate_keys(keys_dir: Path) -> str:
    """A new key pair in ``keys_dir`` (private key 0600); returns the public key's fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    write_atomic(keys_dir / PRIVATE_KEY, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    write_atomic(keys_dir / PUBLIC_KEY, public_pem(key.public_key()))
    return fingerprint(key.public_key())


def load_private_key(keys_dir: Path) -> RSAPrivateKey:
    path = keys_dir / PRIVATE_KEY
    if not path.is_file():
        raise SupplyChainError(f"no private key at {path} (generate one: orch sbom sign --generate-key)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SupplyChainError(f"{path} is readable by others (mode {mode:04o}); run: chmod 600 {path}")
    return private_key_from_pem(path.read_bytes(), str(path))


def private_key_from_pem(pem: bytes, source: str) -> RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SupplyChainError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, RSAPrivateKey):
        raise SupplyChainError(f"{source}: not an RSA key (RSA-PSS needs one)")
    return key


def load_public_key(keys_dir: Path) -> RSAPublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    path = keys_dir / PUBLIC_KEY
    if not path.is_file():
        raise SupplyChainError(f"no public key at {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise SupplyChainError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, RSAPublicKey):
        raise SupplyChainError(f"{path}: not an RSA public key")
    return key


def public_pem(key: RSAPublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: RSAPublicKey) -> str:
    """``sha256:<hex>`` of the DER public key: names a key without showing it."""
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _pss() -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    # Salt as long as the digest: what JWA's PS256 prescribes, so both forms verify the same way.
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def _sign(key: RSAPrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return key.sign(data, _pss(), hashes.SHA256())


def _check(key: RSAPublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    try:
        key.verify(signature, data, _pss(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --- detached ---------------------------------------------------------------------------------------------

def sign_detached(sbom: Path, out: Path, key: RSAPrivateKey) -> dict[str, Any]:
    """Write the signature of ``sbom`` to ``out`` and the public key beside it (``<stem>.pub.pem``)."""
    data = _read(sbom, "SBOM")
    public = key.public_key()
    document = {"algorithm": ALGORITHM, "key_fingerprint": fingerprint(public),
                "sbom_sha256": hashlib.sha256(data).hexdigest(),
                "signature": base64.b64encode(_sign(key, data)).decode("ascii")}
    write_atomic(out, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    write_atomic(public_key_beside(out), public_pem(public))
    return {"sbom": str(sbom), "signature": str(out), "public_key": str(public_key_beside(out)),
            "key_fingerprint": document["key_fingerprint"], "sbom_sha256": document["sbom_sha256"]}


def public_key_beside(signature: Path) -> Path:
    return signature.with_name(signature.stem + ".pub.pem")


def verify_detached(sbom: Path, signature: Path, key: RSAPublicKey) -> dict[str, Any]:
    """Raise :class:`VerificationFailed` naming the failed check; return the verified facts otherwise."""
    data = _read(sbom, "SBOM")
    if not signature.is_file():
        raise VerificationFailed("missing signature", f"no signature file at {signature}")
    try:
        document = json.loads(signature.read_bytes())
        raw = base64.b64decode(document["signature"], validate=True)
        claimed_key, claimed_digest = str(document["key_fingerprint"]), str(document["sbom_sha256"])
        if document.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {document.get('algorithm')!r}, expected {ALGORITHM}")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise VerificationFailed("malformed signature", f"{signature} is not an ORCH SBOM signature ({exc})") \
            from None
    if len(raw) != key.key_size // 8:
        raise VerificationFailed("malformed signature", f"{signature} holds {len(raw)} signature bytes, a "
                                 f"{key.key_size}-bit key makes {key.key_size // 8}")
    if _check(key, raw, data):
        return {"sbom": str(sbom), "signature": str(signature), "key_fingerprint": fingerprint(key),
                "sbom_sha256": hashlib.sha256(data).hexdigest(), "verified": True}
    actual_digest = hashlib.sha256(data).hexdigest()
    if claimed_key != fingerprint(key):
        raise VerificationFailed("wrong key", f"signed by {claimed_key}, verified with {fingerprint(key)}")
    if claimed_digest != actual_digest:
        raise VerificationFailed("SBOM changed", f"{sbom} has sha256 {actual_digest}, the signed one had "
                                 f"{claimed_digest}")
    raise VerificationFailed("bad signature", f"the signature in {signature} does not match {sbom}")


# --- embedded (CycloneDX JSF) -----------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwk(key: RSAPublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}


def canonical(document: dict[str, Any]) -> bytes:
    """JSF's canonical form: RFC 8785 (JCS). Raises ``rfc8785.CanonicalizationError`` (a ValueError) for
    what JCS cannot represent: NaN, infinities, integers beyond 2**53."""
    import rfc8785

    return rfc8785.dumps(document)


def _legacy_canonical(document: dict[str, Any]) -> bytes:
    """What embedded signatures made before RFC 8785 signed; only verified, never signed any more."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_embedded(sbom: Path, out: Path, key: RSAPrivateKey) -> dict[str, Any]:
    """Write a copy of the BOM carrying a JSF ``PS256`` signature over its RFC 8785 form to ``out``."""
    document = _load_json(sbom)
    document.pop("signature", None)
    document["signature"] = {"algorithm": JSF_ALGORITHM, "publicKey": _jwk(key.public_key())}
    try:
        signed = canonical(document)
    except ValueError as exc:
        raise SupplyChainError(f"{sbom} cannot be signed: RFC 8785 cannot represent it ({exc})") from None
    document["signature"]["value"] = _b64url(_sign(key, signed))
    write_atomic(out, (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return {"sbom": str(out), "algorithm": JSF_ALGORITHM, "canonicalization": CANONICAL_FORM,
            "key_fingerprint": fingerprint(key.public_key())}


def verify_embedded(sbom: Path, key: RSAPublicKey) -> dict[str, Any]:
    """Verify the JSF signature over the RFC 8785 form; a signature over the legacy form still verifies,
    and the result then says so (``canonicalization``, ``warning``) so the BOM gets re-signed."""
    document = _load_json(sbom)
    signature = document.get("signature")
    if signature is None:
        raise VerificationFailed("missing signature", f"{sbom} has no embedded signature")
    try:
        if signature.get("algorithm") != JSF_ALGORITHM:
            raise ValueError(f"algorithm {signature.get('algorithm')!r}, expected {JSF_ALGORITHM}")
        value = _unb64url(str(signature["value"]))
        embedded_key = signature["publicKey"]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise VerificationFailed("malformed signature", f"{sbom}: {exc}") from None
    if embedded_key != _jwk(key):
        raise VerificationFailed("wrong key", f"{sbom} was signed with another key than {fingerprint(key)}")
    unsigned = {**document, "signature": {k: v for k, v in signature.items() if k != "value"}}
    if len(value) != key.key_size // 8:
        raise VerificationFailed("malformed signature", f"{len(value)} signature bytes, expected "
                                 f"{key.key_size // 8}")
    facts = {"sbom": str(sbom), "algorithm": JSF_ALGORITHM, "key_fingerprint": fingerprint(key), "verified": True}
    try:
        current = canonical(unsigned)
    except ValueError:  # not representable in JCS, so not signed by this version: only the legacy form can match
        current = None
    if current is not None and _check(key, value, current):
        return {**facts, "canonicalization": CANONICAL_FORM}
    if _check(key, value, _legacy_canonical(unsigned)):
        return {**facts, "canonicalization": LEGACY_FORM, "warning": LEGACY_WARNING}
    raise VerificationFailed("SBOM changed", f"{sbom} does not match its embedded signature")


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise SupplyChainError(f"no {what} at {path}")
    return path.read_bytes()


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(_read(path, "SBOM"))
    except json.JSONDecodeError as exc:
        raise VerificationFailed("SBOM changed", f"{path} is not JSON any more ({exc.msg})") from None
    if not isinstance(document, dict):
        raise VerificationFailed("SBOM changed", f"{path} is not a JSON object")
    return document
