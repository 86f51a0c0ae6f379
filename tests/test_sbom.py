"""The SBOM: real CycloneDX generation and schema validation, real RSA-PSS keys, tampering of every kind."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orch.supply_chain.errors import SupplyChainError, VerificationFailed
from orch.supply_chain.sbom import build_sbom, validation_errors
from orch.supply_chain.signing import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    generate_keys,
    load_private_key,
    load_public_key,
    sign_detached,
    sign_embedded,
    verify_detached,
    verify_embedded,
)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def sbom_bytes() -> bytes:
    return build_sbom(PYPROJECT)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keys(directory)
    return directory


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("other-keys")
    generate_keys(directory)
    return directory


@pytest.fixture
def signed(tmp_path: Path, sbom_bytes: bytes, keys: Path) -> tuple[Path, Path]:
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(sbom_bytes)
    signature = tmp_path / "sbom.sig"
    sign_detached(sbom, signature, load_private_key(keys))
    return sbom, signature


def test_sbom_is_valid_cyclonedx_16_with_the_project_as_root(sbom_bytes: bytes) -> None:
    document = json.loads(sbom_bytes)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    assert document["metadata"]["component"]["name"] == "orch-next"
    assert document["metadata"]["component"]["type"] == "application"
    names = {c["name"].lower() for c in document["components"]}
    assert {"prefect", "cryptography", "sqlalchemy"} <= names
    assert "orch-next" not in names  # the root is the metadata component, not a library
    assert validation_errors(document) == []


def test_sbom_is_reproducible_for_an_unchanged_environment(sbom_bytes: bytes) -> None:
    assert build_sbom(PYPROJECT) == sbom_bytes


def test_validation_rejects_what_the_schema_forbids(sbom_bytes: bytes) -> None:
    document = json.loads(sbom_bytes)
    document["components"][0]["externalReferences"] = [{"type": "website", "url": "http://exa mple.org/ x"}]
    document["components"][1]["purl"] = 5
    document["components"][2]["unknownField"] = True
    errors = validation_errors(document)
    assert any("components/0/externalReferences/0/url" in e for e in errors)
    assert any("components/1/purl" in e for e in errors)
    assert any("unknownField" in e for e in errors)


def test_fast_iri_check_never_accepts_what_the_exact_grammar_refuses(sbom_bytes: bytes) -> None:
    from rfc3987_syntax import is_valid_syntax

    from orch.supply_chain.schema_check import URI_REFERENCE

    components = json.loads(sbom_bytes)["components"]
    found = sorted({ref["url"] for c in components for ref in c.get("externalReferences", [])})
    urls = found[::max(1, len(found) // 40)]  # a spread of real ones: the exact grammar costs ~50 ms per URL
    urls += ["http://exa mple.org", "%zz", "http://h/p?q#f#g", "ü/x", "http://[::1]/", "a b", "//host:80/p",
             "mailto:ops@example.org", "urn:uuid:6b1f0c1e", "../relative/path", "http://h/%41", "http://h/<x>"]
    for url in urls:
        if URI_REFERENCE.fullmatch(url):
            assert is_valid_syntax("iri_reference", url), url
    assert sum(bool(URI_REFERENCE.fullmatch(u)) for u in urls) > len(urls) // 2  # the fast path is the common one


def test_validation_needs_no_network(tmp_path: Path, sbom_bytes: bytes) -> None:
    """Schema references resolve to the copies shipped in cyclonedx-python-lib: no socket is ever opened."""
    (tmp_path / "sbom.json").write_bytes(sbom_bytes)
    code = (
        "import json, socket, sys\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from orch.supply_chain.sbom import validation_errors\n"
        "doc = json.load(open(sys.argv[1]))\n"
        "assert validation_errors(doc) == [], validation_errors(doc)\n"
        "doc['signature'] = {'algorithm': 'PS256', 'value': 5}\n"
        "assert validation_errors(doc), 'the JSF schema (a $ref) was not applied'\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sbom.json")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_keys_private_key_is_0600_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    generate_keys(tmp_path)
    assert (tmp_path / PRIVATE_KEY).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / PUBLIC_KEY).is_file()
    os.chmod(tmp_path / PRIVATE_KEY, 0o644)
    with pytest.raises(SupplyChainError, match="readable by others.*chmod 600"):
        load_private_key(tmp_path)


def test_untouched_sbom_verifies(signed: tuple[Path, Path], keys: Path) -> None:
    sbom, signature = signed
    result = verify_detached(sbom, signature, load_public_key(keys))
    assert result["verified"] is True
    assert (sbom.parent / "sbom.pub.pem").read_bytes() == (keys / PUBLIC_KEY).read_bytes()


@pytest.mark.parametrize("offset", [0, 1000, -2])
def test_one_changed_byte_is_detected(signed: tuple[Path, Path], keys: Path, offset: int) -> None:
    sbom, signature = signed
    data = bytearray(sbom.read_bytes())
    data[offset] ^= 0x01
    sbom.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed) as failure:
        verify_detached(sbom, signature, load_public_key(keys))
    assert failure.value.reason == "SBOM changed"


def test_wrong_key_is_named(signed: tuple[Path, Path], other_keys: Path) -> None:
    sbom, signature = signed
    with pytest.raises(VerificationFailed) as failure:
        verify_detached(sbom, signature, load_public_key(other_keys))
    assert failure.value.reason == "wrong key"


def test_missing_signature_is_named(signed: tuple[Path, Path], keys: Path) -> None:
    sbom, signature = signed
    signature.unlink()
    with pytest.raises(VerificationFailed) as failure:
        verify_detached(sbom, signature, load_public_key(keys))
    assert failure.value.reason == "missing signature"


@pytest.mark.parametrize("damage", ["not json", "no base64", "truncated", "empty"])
def test_malformed_signature_is_named(signed: tuple[Path, Path], keys: Path, damage: str) -> None:
    sbom, signature = signed
    document = json.loads(signature.read_text())
    if damage == "not json":
        signature.write_text("garbage\n")
    elif damage == "no base64":
        signature.write_text(json.dumps({**document, "signature": "***not base64***"}))
    elif damage == "truncated":
        signature.write_text(json.dumps({**document, "signature": document["signature"][:40]}))
    else:
        signature.write_text("")
    with pytest.raises(VerificationFailed) as failure:
        verify_detached(sbom, signature, load_public_key(keys))
    assert failure.value.reason == "malformed signature"


def test_altered_signature_bytes_with_intact_hints_fail(signed: tuple[Path, Path], keys: Path) -> None:
    sbom, signature = signed
    document = json.loads(signature.read_text())
    raw = bytearray(base64.b64decode(document["signature"]))
    raw[10] ^= 0xFF
    signature.write_text(json.dumps({**document, "signature": base64.b64encode(bytes(raw)).decode()}))
    with pytest.raises(VerificationFailed) as failure:
        verify_detached(sbom, signature, load_public_key(keys))
    assert failure.value.reason == "bad signature"


def test_embedded_jsf_signature_is_valid_cyclonedx_and_detects_tampering(
        tmp_path: Path, sbom_bytes: bytes, keys: Path, other_keys: Path) -> None:
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(sbom_bytes)
    embedded = tmp_path / "sbom.signed.json"
    sign_embedded(sbom, embedded, load_private_key(keys))
    document = json.loads(embedded.read_text())
    assert document["signature"]["algorithm"] == "PS256" and document["signature"]["publicKey"]["kty"] == "RSA"
    assert validation_errors(document) == []
    assert verify_embedded(embedded, load_public_key(keys))["verified"] is True

    with pytest.raises(VerificationFailed, match="wrong key"):
        verify_embedded(embedded, load_public_key(other_keys))
    document["components"][0]["version"] += ".1"
    embedded.write_text(json.dumps(document))
    with pytest.raises(VerificationFailed, match="SBOM changed"):
        verify_embedded(embedded, load_public_key(keys))
    with pytest.raises(VerificationFailed, match="missing signature"):
        verify_embedded(sbom, load_public_key(keys))


def _with_a_float(sbom_bytes: bytes) -> dict[str, Any]:
    """The SBOM with a CVSS score: a float, where RFC 8785 (``7``) and ``json.dumps`` (``7.0``) differ."""
    document = json.loads(sbom_bytes)
    document["vulnerabilities"] = [{"id": "CVE-2024-0001", "ratings": [{"score": 7.0, "method": "CVSSv31"}]}]
    return document


def _pss_verifies(keys: Path, signature: str, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    try:
        load_public_key(keys).verify(raw, data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                            salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def test_embedded_signature_signs_the_rfc_8785_form(tmp_path: Path, sbom_bytes: bytes, keys: Path) -> None:
    import rfc8785

    sbom, embedded = tmp_path / "sbom.json", tmp_path / "sbom.signed.json"
    sbom.write_text(json.dumps(_with_a_float(sbom_bytes)))
    signed = sign_embedded(sbom, embedded, load_private_key(keys))
    document = json.loads(embedded.read_text())
    assert validation_errors(document) == []
    unsigned = {**document, "signature": {k: v for k, v in document["signature"].items() if k != "value"}}
    jcs = rfc8785.dumps(unsigned)
    legacy = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert b'"score":7}' in jcs and jcs != legacy
    assert _pss_verifies(keys, document["signature"]["value"], jcs)  # what an independent JSF verifier checks
    assert not _pss_verifies(keys, document["signature"]["value"], legacy)
    assert signed["canonicalization"] == "RFC 8785"
    result = verify_embedded(embedded, load_public_key(keys))
    assert result["verified"] is True and result["canonicalization"] == "RFC 8785" and "warning" not in result

    document["vulnerabilities"][0]["ratings"][0]["score"] = 7.5  # tampered: the score no longer verifies
    embedded.write_text(json.dumps(document))
    with pytest.raises(VerificationFailed, match="SBOM changed"):
        verify_embedded(embedded, load_public_key(keys))


def test_a_legacy_signature_verifies_with_a_warning_to_re_sign(
        tmp_path: Path, sbom_bytes: bytes, keys: Path) -> None:
    """A BOM signed before RFC 8785 (over ``json.dumps(sort_keys=True)``) still verifies, and says to re-sign."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from support import run_orch

    document = _with_a_float(sbom_bytes)
    public = load_public_key(keys).public_numbers()
    document["signature"] = {"algorithm": "PS256", "publicKey": {
        "kty": "RSA", "n": base64.urlsafe_b64encode(public.n.to_bytes((public.n.bit_length() + 7) // 8, "big"))
        .rstrip(b"=").decode(), "e": "AQAB"}}
    legacy = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    raw = load_private_key(keys).sign(legacy, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                          salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    document["signature"]["value"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    old = tmp_path / "old.signed.json"
    old.write_text(json.dumps(document, indent=2, sort_keys=True))

    result = verify_embedded(old, load_public_key(keys))
    assert result["verified"] is True and result["canonicalization"] == "legacy json.dumps(sort_keys=True)"
    assert result["warning"] == "signed with the legacy canonical form; re-sign with `orch sbom sign --embed`"
    cli = run_orch("sbom", "verify", "--sbom", str(old), "--embedded", "--keys-dir", str(keys),
                   env={"ORCH_HOME": str(tmp_path)})
    assert cli.returncode == 0 and json.loads(cli.stdout)["verified"] is True
    assert cli.stderr.strip() == f"warning: {result['warning']}"

    document["components"][0]["version"] += ".1"  # tampered: neither form verifies
    old.write_text(json.dumps(document))
    with pytest.raises(VerificationFailed, match="SBOM changed"):
        verify_embedded(old, load_public_key(keys))


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sbom" / name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ORCH_HOME": str(cwd)})


def test_the_guides_commands_work_as_written(tmp_path: Path, sbom_bytes: bytes) -> None:
    sbom_dir = tmp_path / "observability" / "sbom"
    sbom_dir.mkdir(parents=True)
    (sbom_dir / "sbom.json").write_bytes(sbom_bytes)
    sign = _script("sign_sbom.py", "--sbom", "observability/sbom/sbom.json", "--out", "observability/sbom/sbom.sig",
                   "--keys-dir", "observability/sbom/keys", cwd=tmp_path)
    assert sign.returncode == 0, sign.stderr
    assert "generated a new signing key pair" in sign.stderr
    verify_args = ("--sbom", "observability/sbom/sbom.json", "--sig", "observability/sbom/sbom.sig",
                   "--keys-dir", "observability/sbom/keys")
    verify = _script("verify_sbom.py", *verify_args, cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["verified"] is True

    from support import run_orch

    env = {"ORCH_HOME": str(tmp_path)}
    embedded = run_orch("sbom", "sign", "--embed", str(sbom_dir / "signed.json"), env=env)
    assert embedded.returncode == 0 and "generated" not in embedded.stderr  # reuses the keys directory's pair
    assert json.loads(run_orch("sbom", "verify", "--sbom", str(sbom_dir / "signed.json"), "--embedded",
                               env=env).stdout)["algorithm"] == "PS256"

    (sbom_dir / "sbom.json").write_bytes(sbom_bytes.replace(b'"orch-next"', b'"orch-nexT"', 1))
    tampered = _script("verify_sbom.py", *verify_args, cwd=tmp_path)
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("error: SBOM verification failed (SBOM changed)")
    assert "Traceback" not in tampered.stderr


def test_orch_sbom_generate_writes_the_guides_path(tmp_path: Path) -> None:
    from support import run_orch

    done = run_orch("sbom", "generate", "--pyproject", str(PYPROJECT), env={"ORCH_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    written = tmp_path / "observability" / "sbom" / "sbom.json"
    assert json.loads(done.stdout)["path"] == str(written)
    assert validation_errors(json.loads(written.read_text())) == []
    missing = run_orch("sbom", "generate", "--pyproject", str(tmp_path / "nope.toml"),
                       env={"ORCH_HOME": str(tmp_path)})
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "pyproject" in missing.stderr


def test_sbom_flow_generates_signs_and_verifies_with_a_key_from_a_prefect_secret_block(
        prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Path) -> None:
    from prefect.blocks.system import Secret

    from flows.sbom import sbom
    from orch.config.runtime import reset_settings_cache
    from orch.supply_chain.signing import fingerprint

    block = f"sbom-key-{os.getpid()}"
    Secret(value=(keys / PRIVATE_KEY).read_text()).save(block, overwrite=True)
    monkeypatch.setenv("ORCH_SUPPLY_CHAIN__REPO_DIR", str(ROOT))
    monkeypatch.setenv("ORCH_SUPPLY_CHAIN__SBOM_PATH", str(tmp_path / "out" / "sbom.json"))
    monkeypatch.setenv("ORCH_SUPPLY_CHAIN__SIGNING_KEY_BLOCK", block)
    reset_settings_cache()
    state = sbom(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["signature"]["key_fingerprint"] == fingerprint(load_public_key(keys))
    assert result["verification"].startswith("sbom: passed")
    assert verify_detached(tmp_path / "out" / "sbom.json", tmp_path / "out" / "sbom.sig",
                           load_public_key(keys))["verified"] is True
    assert not (tmp_path / "home" / "observability" / "sbom" / "keys").exists()  # the key never touched the disk


def test_sbom_flow_with_a_keys_directory_makes_a_key_when_there_is_none(
        prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.sbom import sbom
    from orch.config.runtime import reset_settings_cache

    monkeypatch.setenv("ORCH_SUPPLY_CHAIN__REPO_DIR", str(ROOT))
    reset_settings_cache()
    state = sbom(return_state=True)
    assert state.is_completed(), state.message
    keys_dir = isolated_env / "observability" / "sbom" / "keys"
    assert (keys_dir / PRIVATE_KEY).stat().st_mode & 0o777 == 0o600
    assert verify_detached(isolated_env / "observability" / "sbom" / "sbom.json",
                           isolated_env / "observability" / "sbom" / "sbom.sig", load_public_key(keys_dir))["verified"]


def test_sbom_flow_fails_and_notifies_when_the_signature_does_not_verify(
        prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, keys: Path, other_keys: Path) -> None:
    """A keys directory whose public key is not the signing key's: the run fails naming why, and says so."""
    import shutil

    from receivers import http_receiver

    from flows.sbom import sbom
    from orch.config.runtime import reset_settings_cache

    keys_dir = isolated_env / "observability" / "sbom" / "keys"
    keys_dir.mkdir(parents=True)
    shutil.copy2(keys / PRIVATE_KEY, keys_dir / PRIVATE_KEY)
    shutil.copy2(other_keys / PUBLIC_KEY, keys_dir / PUBLIC_KEY)
    with http_receiver() as receiver:
        monkeypatch.setenv("ORCH_SUPPLY_CHAIN__REPO_DIR", str(ROOT))
        monkeypatch.setenv("ORCH_NOTIFICATIONS__WEBHOOK__URL", receiver.url)
        reset_settings_cache()
        state = sbom(return_state=True)
    assert state.is_failed() and "SBOM verification failed (wrong key)" in state.message
    assert len(receiver.requests) == 1 and "wrong key" in str(receiver.requests[0]["body"])
