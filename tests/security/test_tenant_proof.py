"""The tenant proof's parts: the signed format, the window, key rings and their stores, the
replay memory, the check's modes and its wiring from settings."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from devhost.redis import RedisServer
from shared.batch.fanout import RowMessage
from shared.contracts import REQUEST_TYPE
from shared.inference.replies import Reply
from shared.messages import InboundMessage
from shared.security import proof
from shared.security.keys import CachedKeys, KeyFile, KeyRing, KeyRingError, KeyState
from shared.security.proof import ProofError, ProofReason
from shared.security.sign import TenantSigner
from shared.security.tenant_check import ProofMode, TenantProofs
from shared.security.tenant_replay import MemorySeenIds, RedisSeenIds, seen_key
from shared.security.tenant_senders import ProvingReplySender, ProvingRowSender
from shared.security.tenant_wiring import tenant_proofs_from_settings
from shared.settings import Settings
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import RecordingReplySender, memory_runtime
from tests.security.tenant_proof_kit import (
    NOW,
    StaticKeys,
    registry,
    request_body,
    signed,
    signer,
)

T0 = int(NOW.timestamp())


def canonical(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "tenant_id": "contoso",
        "message_id": "m-1",
        "reply_to": "replies-contoso",
        "contract_type": REQUEST_TYPE,
        "body_digest": proof.body_sha256(b"{}"),
        "at": T0,
        "key_id": "k1",
    }
    fields.update(changes)
    return proof.canonical_message(**fields)  # type: ignore[arg-type]


def ring(*secrets: str) -> KeyRing:
    ring = KeyRing.new("contoso", NOW - timedelta(days=1))
    key = ring.keys[0]
    keys = [
        type(key)(f"k{i + 1}", s, KeyState.ACTIVE, NOW + timedelta(seconds=i))
        for i, s in enumerate(secrets)
    ]
    return KeyRing("contoso", tuple(keys))


# --- the signed format -----------------------------------------------------------------------


def test_what_the_sender_signs_is_what_the_verifier_checks() -> None:
    body = request_body("contoso", "r-1")
    props = TenantSigner("contoso", "k1", "s3cret").message_properties(
        body, message_id="m-1", reply_to="replies-contoso", at=T0
    )
    presented = proof.presented(props)
    text = canonical(body_digest=proof.body_sha256(body))
    assert proof.verify(ring("s3cret"), presented, text, reference_s=T0) == "k1"
    assert text.decode().splitlines() == [
        "tenant-proof-v1",
        "sb",
        "contoso",
        "m-1",
        "replies-contoso",
        "inference.request",
        proof.body_sha256(body),
        str(T0),
        "k1",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "tailwind"},
        {"message_id": "m-2"},
        {"reply_to": "replies-tailwind"},
        {"reply_to": None},
        {"contract_type": "feedback"},
        {"body_digest": proof.body_sha256(b"{ }")},
        {"at": T0 + 1},
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_covered_field_changes_the_signature(change: dict[str, object]) -> None:
    presented = proof.Presented(proof.sign("s3cret", canonical()), T0, "k1")
    with pytest.raises(ProofError) as caught:
        proof.verify(ring("s3cret"), presented, canonical(**change), reference_s=T0)
    assert caught.value.reason == ProofReason.INVALID


def test_a_line_break_in_a_field_cannot_shift_one_field_into_the_next() -> None:
    with pytest.raises(ValueError, match="line break"):
        canonical(message_id="m-1\nreplies-tailwind")


def test_the_http_form_covers_method_path_nonce_body_and_time() -> None:
    signer_ = TenantSigner("contoso", "k1", "s3cret")
    headers = signer_.http_headers(
        "post", "/api/tenants/contoso/feedback", b"{}", nonce="n1", at=T0
    )
    assert headers[proof.NONCE] == "n1"
    good = proof.canonical_http(
        tenant_id="contoso",
        nonce="n1",
        method="POST",
        path="/api/tenants/contoso/feedback",
        body_digest=proof.body_sha256(b"{}"),
        at=T0,
        key_id="k1",
    )
    presented = proof.presented(headers)
    assert proof.verify(ring("s3cret"), presented, good, reference_s=T0) == "k1"
    for method, path in (("GET", "/api/tenants/contoso/feedback"), ("POST", "/api/x")):
        other = proof.canonical_http(
            tenant_id="contoso",
            nonce="n1",
            method=method,
            path=path,
            body_digest=proof.body_sha256(b"{}"),
            at=T0,
            key_id="k1",
        )
        with pytest.raises(ProofError):
            proof.verify(ring("s3cret"), presented, other, reference_s=T0)


@pytest.mark.parametrize(
    ("props", "reason", "mentions"),
    [
        ({}, ProofReason.MISSING, "x-tenant-proof"),
        ({"x-tenant-proof": "a" * 64, "x-tenant-key-id": "k1"}, ProofReason.MISSING, "time"),
        ({"x-tenant-proof": "A" * 64, "x-tenant-proof-time": "1", "x-tenant-key-id": "k1"},
         ProofReason.INVALID, "hex"),
        ({"x-tenant-proof": "a" * 64, "x-tenant-proof-time": "-5", "x-tenant-key-id": "k1"},
         ProofReason.INVALID, "Unix seconds"),
        ({"x-tenant-proof": "a" * 64, "x-tenant-proof-time": "1", "x-tenant-key-id": "k 1"},
         ProofReason.INVALID, "key id"),
        # a trailing newline: what is checked must be byte for byte what was signed
        ({"x-tenant-proof": "a" * 64, "x-tenant-proof-time": "1\n", "x-tenant-key-id": "k1"},
         ProofReason.INVALID, "Unix seconds"),
        ({"x-tenant-proof": "a" * 64 + "\n", "x-tenant-proof-time": "1", "x-tenant-key-id": "k1"},
         ProofReason.INVALID, "hex"),
    ],
)  # fmt: skip
def test_missing_or_malformed_proof_properties_are_named(
    props: dict[str, str], reason: str, mentions: str
) -> None:
    with pytest.raises(ProofError) as caught:
        proof.presented(props)
    assert caught.value.reason == reason
    assert mentions in caught.value.detail


@pytest.mark.parametrize(("skew", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_the_window_is_five_minutes_either_way(skew: int, ok: bool) -> None:
    presented = proof.Presented(proof.sign("s3cret", canonical()), T0, "k1")
    if ok:
        proof.verify(ring("s3cret"), presented, canonical(), reference_s=T0 + skew)
        return
    with pytest.raises(ProofError) as caught:
        proof.verify(ring("s3cret"), presented, canonical(), reference_s=T0 + skew)
    assert caught.value.reason == ProofReason.EXPIRED


# --- key rings ---------------------------------------------------------------------------------


def test_a_rollover_allows_two_active_keys_never_three_and_keeps_one() -> None:
    first = KeyRing.new("contoso", NOW)
    two, new = first.rotated(NOW + timedelta(days=1))
    assert [k.state for k in two.keys] == [KeyState.ACTIVE, KeyState.ACTIVE]
    assert two.signing_key() == new
    with pytest.raises(KeyRingError, match="already has 2 active"):
        two.rotated(NOW)
    one = two.retired(first.keys[0].id, NOW + timedelta(days=2))
    old = one.find(first.keys[0].id)
    assert old is not None
    assert (old.state, old.secret) == (KeyState.RETIRED, None)  # the secret is erased
    with pytest.raises(KeyRingError, match="only active key"):
        one.retired(new.id)
    assert KeyRing.from_json(json.loads(json.dumps(one.to_json()))) == one


def test_a_retired_key_is_named_as_such() -> None:
    retired = ring("a", "b").retired("k1", NOW)
    presented = proof.Presented(proof.sign("a", canonical()), T0, "k1")
    with pytest.raises(ProofError) as caught:
        proof.verify(retired, presented, canonical(), reference_s=T0)
    assert caught.value.reason == ProofReason.KEY_RETIRED


@pytest.mark.parametrize(
    "document",
    [
        {"keys": "no"},
        {"tenant_id": "contoso", "keys": [{"id": "k1", "state": "active"}]},
        {"tenant_id": "contoso", "keys": [{"id": "k 1", "secret": "s", "state": "active",
                                           "created_at": NOW.isoformat()}]},
        {"tenant_id": "contoso", "keys": [{"id": f"k{i}", "secret": "s", "state": "active",
                                           "created_at": NOW.isoformat()} for i in range(3)]},
    ],
)  # fmt: skip
def test_a_malformed_ring_is_refused(document: object) -> None:
    with pytest.raises(KeyRingError):
        KeyRing.from_json(document)


def test_new_secrets_are_random_and_long() -> None:
    a, b = KeyRing.new("t").keys[0], KeyRing.new("t").keys[0]
    assert a.secret != b.secret
    assert a.secret is not None
    assert len(a.secret) >= 43  # 32 bytes


async def test_the_cache_keeps_a_ring_but_looks_up_an_unknown_key_id_at_once() -> None:
    keys = StaticKeys()
    now = [0.0]
    cached = CachedKeys(keys, ttl_s=300, miss_refresh_s=5, clock=lambda: now[0])
    await cached.ring("contoso", "k-contoso-1")
    await cached.ring("contoso", "k-contoso-1")
    assert keys.reads == 1
    now[0] = 10.0
    await cached.ring("contoso", "k-new")  # not in the cached ring: read again
    assert keys.reads == 2
    now[0] = 11.0
    await cached.ring("contoso", "k-new")  # still unknown, but not more often than every 5 s
    assert keys.reads == 2
    now[0] = 400.0
    await cached.ring("contoso", "k-contoso-1")  # the TTL passed
    assert keys.reads == 3
    assert await cached.ring("nobody") is None
    assert await cached.ring("nobody") is None
    assert keys.reads == 4


def test_the_keys_file_is_private_atomic_and_keeps_concurrent_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "tenant-keys.json"
    errors: list[BaseException] = []

    def add(tenant: str) -> None:
        try:
            KeyFile(path).put_now(KeyRing.new(tenant))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"t{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(KeyFile(path).read_all()) == sorted(f"t{i}" for i in range(12))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


async def test_the_keys_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tenant-keys.json"
    reader = KeyFile(path)
    assert await reader.ring("contoso") is None
    first = KeyRing.new("contoso")
    KeyFile(path).put_now(first)
    assert await reader.ring("contoso") == first
    second, _ = first.rotated()
    KeyFile(path).put_now(second)
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1_000_000))
    assert await reader.ring("contoso") == second


# --- replay memory -----------------------------------------------------------------------------


async def test_memory_replay_memory_tells_a_redelivery_from_a_replay() -> None:
    now = [0.0]
    seen = MemorySeenIds(lambda: now[0])
    assert await seen.claim("contoso", "m-1", delivery="e1", ttl_s=660)
    assert await seen.claim("contoso", "m-1", delivery="e1", ttl_s=660)  # redelivery
    assert not await seen.claim("contoso", "m-1", delivery="e2", ttl_s=660)  # replay
    assert await seen.claim("tailwind", "m-1", delivery="e2", ttl_s=660)  # per tenant
    assert await seen.claim("contoso", "n-1", delivery=None, ttl_s=660)
    assert not await seen.claim("contoso", "n-1", delivery=None, ttl_s=660)  # HTTP: once
    now[0] = 661.0
    assert await seen.claim("contoso", "m-1", delivery="e3", ttl_s=660)  # forgotten after ttl


async def test_redis_replay_memory_is_shared_by_instances(redis_server: RedisServer) -> None:
    one, two = RedisSeenIds(redis_server.url), RedisSeenIds(redis_server.url)
    try:
        message_id = f"m-{os.urandom(4).hex()}"
        assert await one.claim("contoso", message_id, delivery="e1", ttl_s=60)
        assert await two.claim("contoso", message_id, delivery="e1", ttl_s=60)
        assert not await two.claim("contoso", message_id, delivery="e2", ttl_s=60)
        assert not one.degraded
    finally:
        await one.close()
        await two.close()


async def test_redis_unreachable_falls_back_to_memory_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = RedisSeenIds("redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.WARNING):
            assert await seen.claim("contoso", "m-1", delivery="e1", ttl_s=60)
            assert not await seen.claim("contoso", "m-1", delivery="e2", ttl_s=60)
        assert seen.degraded
        events = [r.message for r in caplog.records if "replay_store_unavailable" in r.message]
        assert len(events) == 1
    finally:
        await seen.close()


def test_seen_keys_never_hold_the_sender_chosen_id() -> None:
    key = seen_key("contoso", "../../etc\r\nFLUSHALL")
    assert key.startswith("tenant-proof:seen:contoso:")
    assert "FLUSHALL" not in key


# --- the check's modes ---------------------------------------------------------------------------


async def test_off_checks_nothing_and_proves_nothing() -> None:
    proofs = TenantProofs(ProofMode.OFF)
    message = signed(None, request_body("contoso", "r-1"), message_id="m-1")
    assert await proofs.check_message(message, REQUEST_TYPE) is None
    assert await proofs.check_http("contoso", "GET", "/api/x", {}, b"") is None
    copy = await proofs.prove_copy(
        message.body, message_id="m", reply_to=None, contract_type=REQUEST_TYPE
    )
    assert copy == {}


async def test_required_without_a_key_store_refuses_everything() -> None:
    proofs = TenantProofs(ProofMode.REQUIRED, keys=None, clock=lambda: NOW)
    by = signer(StaticKeys(), "contoso")
    message = signed(by, request_body("contoso", "r-1"), message_id="m-1")
    refusal = await proofs.check_message(message, REQUEST_TYPE)
    assert refusal is not None
    assert refusal.reason == ProofReason.INVALID


async def test_a_forged_proof_does_not_burn_the_id_it_names() -> None:
    keys = StaticKeys()
    proofs = TenantProofs(ProofMode.REQUIRED, keys=CachedKeys(keys, ttl_s=0), clock=lambda: NOW)
    body = request_body("contoso", "r-1")
    forged = signed(signer(keys, "tailwind"), body, message_id="m-next")
    assert (await proofs.check_message(forged, REQUEST_TYPE)) is not None
    real = signed(signer(keys, "contoso"), body, message_id="m-next")
    assert await proofs.check_message(real, REQUEST_TYPE) is None


async def test_a_message_that_names_no_tenant_is_left_to_the_contract_check() -> None:
    proofs = TenantProofs(ProofMode.REQUIRED, keys=None, clock=lambda: NOW)
    for body in (b"{not json", b"[]", b'{"tenant_id": "Not A Tenant"}', b'{"tenant_id": 5}'):
        message = InboundMessage(body=body, message_id="m-1")
        assert await proofs.check_message(message, REQUEST_TYPE) is None


async def test_the_proving_ports_sign_copies_to_inference_requests_only() -> None:
    keys = StaticKeys()
    proofs = TenantProofs(ProofMode.REQUIRED, keys=CachedKeys(keys, ttl_s=0), clock=lambda: NOW)
    inner = RecordingReplySender()
    sender = ProvingReplySender(inner, proofs)
    body = request_body("contoso", "r-1")
    stale = {proof.PROOF: "f" * 64, proof.PROOF_TIME: "1", proof.KEY_ID: "k-x", "keep": 1}
    at = NOW + timedelta(seconds=40)
    copy_out = Reply(names.INFERENCE_REQUESTS, body, "c", "rs-1", application_properties=stale)
    await sender.send(dataclasses.replace(copy_out, scheduled_enqueue_time_utc=at))
    await sender.send(Reply("replies-contoso", body, "c", "r-1", application_properties=stale))
    copy, reply = inner.sent
    assert reply.application_properties == stale
    assert copy.application_properties["keep"] == 1
    returned = InboundMessage(
        body=body,
        message_id="rs-1",
        application_properties=copy.application_properties,
        enqueued_time=at,
    )
    assert await proofs.check_message(returned, REQUEST_TYPE) is None

    rows: list[tuple[str, list[RowMessage]]] = []

    class Rows:
        async def send_rows(self, queue: str, sent: Sequence[RowMessage]) -> None:
            rows.append((queue, list(sent)))

        async def close(self) -> None:
            return None

    row_sender = ProvingRowSender(Rows(), proofs)
    row = RowMessage(body, "b-row-1", REQUEST_TYPE, {"batch_line": 1})
    await row_sender.send_rows(names.INFERENCE_REQUESTS, [row])
    [(_, [proven_row])] = rows
    delivered = InboundMessage(
        body=body,
        message_id="b-row-1",
        application_properties=proven_row.application_properties,
        enqueued_time=NOW,
    )
    assert await proofs.check_message(delivered, REQUEST_TYPE) is None


# --- wiring from settings -------------------------------------------------------------------------


def build(values: dict[str, str]) -> TenantProofs:
    settings = Settings.model_validate(values)
    return tenant_proofs_from_settings(settings, None, store=MemoryBlobStore(), clock=lambda: NOW)


def test_proofs_are_required_unless_turned_off(tmp_path: Path) -> None:
    assert Settings.model_validate({}).tenant_proof == "required"
    assert build({}).mode is ProofMode.REQUIRED
    assert build({"TENANT_PROOF": "off"}).mode is ProofMode.OFF
    with pytest.raises(ValueError, match="TENANT_PROOF"):
        Settings.model_validate({"TENANT_PROOF": "maybe"})
    filed = build({"TENANT_KEYS_FILE": str(tmp_path / "k.json")})
    assert filed.keys is not None
    assert isinstance(filed.keys.source, KeyFile)


def test_a_vault_needs_the_managed_identity() -> None:
    with pytest.raises(ValueError, match="managed identity"):
        build({"AZURE_KEY_VAULT_ENDPOINT": "https://kv.vault.azure.net"})


async def test_a_hand_built_runtime_has_proofs_off() -> None:
    runtime = memory_runtime(registry())
    assert runtime.tenant_proofs.mode is ProofMode.OFF


async def test_concurrent_first_reads_of_a_ring_read_it_once() -> None:
    keys = StaticKeys()
    cached = CachedKeys(keys, ttl_s=300)
    await asyncio.gather(*(cached.ring("contoso") for _ in range(20)))
    assert keys.reads == 1


async def test_a_field_that_cannot_be_signed_is_refused_not_raised() -> None:
    keys = StaticKeys()
    proofs = TenantProofs(ProofMode.REQUIRED, keys=CachedKeys(keys, ttl_s=0), clock=lambda: NOW)
    good = signed(signer(keys, "contoso"), request_body("contoso", "r-1"), message_id="m-1")
    for message_id, reply_to in (("m-\ud800", None), ("m-1", "q\nx"), ("m-1", "\udfff")):
        odd = dataclasses.replace(good, message_id=message_id, reply_to=reply_to)
        refusal = await proofs.check_message(odd, REQUEST_TYPE)
        assert refusal is not None
        assert (refusal.reason, refusal.request_id) == (ProofReason.INVALID, "r-1")
