"""Rate limits, trusted proxies, settings, and concurrent prekey hand-out."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.errors import ApiError
from cipherpost.server.ratelimit import TokenBuckets

from .helpers import KeyMaker, auth
from .process import ServerProcess


def test_token_bucket() -> None:
    bucket = TokenBuckets("2/1")
    bucket.take("k", now=0.0)
    bucket.take("k", now=0.0)
    with pytest.raises(Exception) as info:
        bucket.take("k", now=0.1)
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "1"  # type: ignore[attr-defined]
    bucket.take("k", now=1.1)
    bucket.take("other", now=0.1)


def test_registration_rate_limited_per_ip(settings: Settings) -> None:
    limited = dataclasses.replace(settings, rate_register_per_ip="2/0.001")
    with TestClient(create_app(limited)) as c:
        for _ in range(2):
            assert c.post("/v1/accounts", json=KeyMaker().device_body()).status_code == 201
        refused = c.post("/v1/accounts", json=KeyMaker().device_body())
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert "cipherpost_rate_limited_total" in c.get("/metrics").text


def test_trusted_proxy_forwarded_for(settings: Settings) -> None:
    behind = dataclasses.replace(settings, rate_register_per_ip="1/0.001",
                                 trusted_proxies=("testclient",))
    with TestClient(create_app(behind)) as c:
        for ip in ("203.0.113.1", "203.0.113.2"):
            r = c.post("/v1/accounts", json=KeyMaker().device_body(),
                       headers={"X-Forwarded-For": f"198.51.100.9, {ip}"})
            assert r.status_code == 201, ip
        again = c.post("/v1/accounts", json=KeyMaker().device_body(),
                       headers={"X-Forwarded-For": "203.0.113.1"})
        assert again.status_code == 429
    untrusted = dataclasses.replace(settings, rate_register_per_ip="1/0.001")
    with TestClient(create_app(untrusted)) as c:
        assert c.post("/v1/accounts", json=KeyMaker().device_body(),
                      headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 201
        # Spoofed headers from an untrusted peer do not buy new buckets.
        assert c.post("/v1/accounts", json=KeyMaker().device_body(),
                      headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 429


def test_settings_from_toml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[server]\nport = 9000\nmax_devices_per_account = 3\n'
                      'trusted_proxies = ["10.0.0.1"]\n')
    s = Settings.load(config, environ={"CIPHERPOST_PORT": "9001"})
    assert (s.port, s.max_devices_per_account, s.trusted_proxies) == (9001, 3, ("10.0.0.1",))
    with pytest.raises(ValueError):
        Settings.load(environ={"CIPHERPOST_CONFIG": str(config), "CIPHERPOST_PORT": "x"})
    config.write_text("surprise = 1\n")
    with pytest.raises(ValueError):
        Settings.load(config, environ={})


def test_concurrent_fetches_hand_out_each_one_time_key_once(tmp_path: Path,
                                                            database_url: str) -> None:
    server = ServerProcess(tmp_path, database_url=database_url)
    server.start()
    try:
        keys = KeyMaker()
        bob = httpx.post(f"{server.url}/v1/accounts",
                         json=keys.device_body(one_time=40, kyber=40)).json()
        alice = httpx.post(f"{server.url}/v1/accounts", json=KeyMaker().device_body()).json()

        async def fetch_all() -> list[dict[str, object]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                         headers=auth(alice["token"])) as http:
                responses = await asyncio.gather(*[
                    http.get(f"/v1/keys/{bob['account_id']}/1") for _ in range(60)])
            return [r.json()["devices"][0] for r in responses]

        devices = asyncio.run(fetch_all())
        one_time = [d["one_time_prekey"]["key_id"] for d in devices  # type: ignore[index]
                    if d["one_time_prekey"]]
        kyber = [d["kyber_prekey"]["key_id"] for d in devices]  # type: ignore[index]
        assert len(one_time) == 40 and len(set(one_time)) == 40
        handed_once = [k for k in kyber if kyber.count(k) == 1]
        assert len(handed_once) == 40
        assert len(set(kyber)) == 41  # 40 one-time keys, then the last-resort key
    finally:
        server.stop()


def test_token_buckets_forget_the_least_recently_used_key_beyond_their_cap() -> None:
    buckets = TokenBuckets("2/0", max_keys=2)
    buckets.take("a", now=0.0)
    buckets.take("b", now=0.0)
    buckets.take("a", now=1.0)  # a is used again: b is now the least recent
    buckets.take("c", now=2.0)  # a third key: b is forgotten
    assert buckets.remaining("b") == 2.0  # a fresh, full bucket
    assert buckets.remaining("a") == 0.0 and buckets.remaining("c") == 1.0
    with pytest.raises(ApiError) as refused:
        buckets.take("a", now=3.0)
    assert refused.value.status == 429
    buckets.take("b", now=3.0)  # a refused use is a use too: c is the least recent
    assert buckets.remaining("c") == 2.0 and buckets.remaining("a") == 0.0
