"""The emulator's Content Credentials: every image it answers with carries a signed C2PA manifest.

Owns the throwaway certificate chain made when an emulator app starts (`make_certificate_chain`:
a root CA and an end-entity signing certificate, EC P-256, with the extensions C2PA asks of a
signer: digitalSignature key usage, the emailProtection extended key usage, not a CA), and
`ContentSigner`, which signs PNG, JPEG and WebP bytes the way a provider does (see
shared/reference/azure-image-apis.md §9): claim generator "Atelier Azure OpenAI emulator", one
`c2pa.created` action with digital source type trainedAlgorithmicMedia naming the model as its
software agent, a `c2pa.hash.data` hard binding over the file's bytes, and for an edit its input
images as ingredients. `break_data_hash` spoils a signed file the way Atelier's old PNG chunk
did (bytes added outside the manifest), for the `[c2pa-broken]` fault.

The root is new each start and trusted by nobody: readers report the manifest valid but its
signer untrusted, unless they are given the root (`GET /_emulator/c2pa/root.pem`).

Guess (not in azure-image-apis.md): Azure's manifests carry a timestamp authority's time; the
emulator has no timestamp authority (it may not reach the network), so its created action says
`when` instead.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Blueprint, Response

GENERATOR = "Atelier Azure OpenAI emulator"
AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ROOT_ORGANIZATION = "Atelier emulator test CA"
CERTIFICATE_DAYS = 365
SIGNED_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CertificateChain:
    """PEM texts: the signing certificate followed by the root, the signing key, the root."""

    chain_pem: bytes
    private_key_pem: bytes
    root_pem: bytes


@dataclass(frozen=True)
class Ingredient:
    """An input image of an edit, exactly as it was sent."""

    data: bytes
    format: str  # "png", "jpeg" or "webp"
    title: str


def make_certificate_chain(now: datetime | None = None) -> CertificateChain:
    """A new root CA and an end-entity C2PA signing certificate it issued, valid from now."""
    now = now or datetime.now(UTC)
    not_before = now - timedelta(minutes=5)  # a reader whose clock is a little behind
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(ROOT_ORGANIZATION, "Atelier emulator throwaway root CA")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name(GENERATOR, f"{GENERATOR} signer"))
        .issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        # C2PA accepts emailProtection (or documentSigning, or its own c2pa-kp-claimSigning);
        # c2pa-rs refuses a signer certificate without one of them, or with anyExtendedKeyUsage.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return CertificateChain(
        chain_pem=signer.public_bytes(pem) + root.public_bytes(pem),
        private_key_pem=signer_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        root_pem=root.public_bytes(pem),
    )


class ContentSigner:
    """Signs image bytes with the emulator's chain; one per emulator app, made at its start.

    The SDK's signer and context are made once; signing runs under a lock because a signer is one
    native object (a sign takes a few milliseconds). A signature is random and a manifest has
    fresh ids, so signing the same image twice gives different bytes; the signed bytes are kept
    per (image, model, ingredients), up to `cache_bytes`, so the emulator still answers the same
    request with the same bytes, as it did before it signed (clients' dedup tests rely on it)."""

    def __init__(
        self, chain: CertificateChain | None = None, *, cache_bytes: int = SIGNED_CACHE_BYTES
    ) -> None:
        import c2pa  # the native library loads when an emulator starts, not at import

        self.chain = chain or make_certificate_chain()
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(
                c2pa.C2paSigningAlg.ES256, self.chain.chain_pem, self.chain.private_key_pem, None
            )
        )
        # No thumbnail in the manifest (the image is its own preview; a thumbnail adds tens of
        # KB and most of the signing time) and no reading back after signing.
        self._context = c2pa.Context.from_dict(
            {
                "builder": {"thumbnail": {"enabled": False}},
                "verify": {
                    "verify_after_sign": False,
                    "remote_manifest_fetch": False,
                    "ocsp_fetch": False,
                },
            }
        )

    @property
    def root_pem(self) -> str:
        return self.chain.root_pem.decode("ascii")

    def sign(
        self,
        data: bytes,
        output_format: str,
        *,
        model: str,
        ingredients: tuple[Ingredient, ...] = (),
        now: datetime | None = None,
    ) -> bytes:
        """`data` (a `output_format` image) with a manifest saying `model` generated it; the
        same arguments give the same bytes while they stay in the cache."""
        import c2pa

        key = (
            hashlib.sha256(data).digest(),
            output_format,
            model,
            tuple((hashlib.sha256(i.data).digest(), i.format, i.title) for i in ingredients),
        )
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        mime_type = MIME_TYPES[output_format]
        when = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        action: dict[str, Any] = {
            "action": "c2pa.created",
            "digitalSourceType": AI_SOURCE_TYPE,
            "softwareAgent": {"name": model},
            "when": when,
        }
        manifest = {
            "claim_generator_info": [{"name": GENERATOR, "version": "1"}],
            "title": f"generated.{output_format}",
            "format": mime_type,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
        }
        with self._lock:
            builder = c2pa.Builder(manifest, context=self._context)
            with builder:
                for ingredient in ingredients:
                    builder.add_ingredient(
                        {"title": ingredient.title, "relationship": "componentOf"},
                        MIME_TYPES[ingredient.format],
                        io.BytesIO(ingredient.data),
                    )
                signed = io.BytesIO()
                builder.sign(self._signer, mime_type, io.BytesIO(data), signed)
            result = signed.getvalue()
            self._remember(key, result)
        return result

    def _remember(self, key: tuple[object, ...], signed: bytes) -> None:
        """Cache `signed` (the lock held), oldest entries dropped past the byte budget."""
        if len(signed) > self._cache_bytes:
            return
        self._cache[key] = signed
        self._cached_bytes += len(signed)
        while self._cached_bytes > self._cache_bytes:
            _key, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)


def break_data_hash(signed: bytes, output_format: str) -> bytes:
    """`signed` with bytes added outside its manifest, so its data hash no longer matches; still
    a valid image (a comment after the header, as Atelier's old metadata chunk was)."""
    note = b"changed after signing by the emulator's [c2pa-broken] fault"
    if output_format == "png":
        chunk_data = b"Comment\x00" + note
        chunk = (
            struct.pack(">I", len(chunk_data))
            + b"tEXt"
            + chunk_data
            + struct.pack(">I", zlib.crc32(b"tEXt" + chunk_data))
        )
        header_end = 8 + 25  # signature, then IHDR (always first, 13 data bytes)
        return signed[:header_end] + chunk + signed[header_end:]
    if output_format == "jpeg":
        comment = b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note
        return signed[:2] + comment + signed[2:]
    if output_format == "webp":
        body = signed[12:] + b"ATLR" + struct.pack("<I", len(note)) + note
        if len(note) % 2:
            body += b"\x00"
        return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
    raise ValueError(f"unsupported output format {output_format!r}")


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
):
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


bp = Blueprint("emulator_content_credentials", __name__, url_prefix="/_emulator/c2pa")


@bp.get("/root.pem")
def root_certificate() -> Response:
    """The throwaway root that signed this emulator's images, for readers that want to trust it."""
    from .state import emulator_state

    return Response(emulator_state().content_signer.root_pem, mimetype="application/x-pem-file")
