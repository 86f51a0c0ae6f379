"""HTTPS from `python -m orch.api.server` with a certificate: TLS 1.2+ and only the guide's ciphers."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from support import free_port, wait_for_https


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _handshake(port: int, *, version: ssl.TLSVersion, ciphers: str | None = None) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")  # let the client offer old things
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


@pytest.fixture
def https_api(isolated_env: Path) -> int:
    cert, key = _self_signed(isolated_env)
    port = free_port()
    env = {**os.environ, "ORCH_HOME": str(isolated_env), "ORCH_PORT": str(port),
           "ORCH_API__TLS_CERT_FILE": str(cert), "ORCH_API__TLS_KEY_FILE": str(key)}
    process = subprocess.Popen([sys.executable, "-m", "orch.api.server"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_for_https(port, process)
    yield port
    process.terminate()
    process.wait(15)


def test_tls_12_with_the_guides_ciphers_only(https_api: int) -> None:
    assert _handshake(https_api, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-GCM-SHA256") == "TLSv1.2"
    assert _handshake(https_api, version=ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        _handshake(https_api, version=ssl.TLSVersion.TLSv1_1)
    # CBC suites: the server's default list accepts this one; the guide's list (AEAD only) does not
    with pytest.raises(ssl.SSLError):
        _handshake(https_api, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-SHA256")
