"""The relay serves HTTPS and WSS itself when given a certificate."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from .helpers import KeyMaker, auth
from .process import ServerProcess


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_and_wss(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = ServerProcess(tmp_path, tls_certfile=str(cert), tls_keyfile=str(key))
    server.url = server.url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))
    server.verify = context
    server.start()
    try:
        with httpx.Client(base_url=server.url, verify=context) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            account = http.post("/v1/accounts", json=KeyMaker().device_body()).json()
        url = server.url.replace("https://", "wss://") + "/v1/websocket"
        with connect(url, ssl=context, additional_headers=auth(account["token"])) as ws:
            ws.send(json.dumps({"type": "ack", "ids": []}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "acked", "ids": []}
        # Plain HTTP on the TLS port is not served.
        try:
            plain = httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=3)
            assert plain.status_code >= 400
        except httpx.HTTPError:
            pass
    finally:
        server.stop()
