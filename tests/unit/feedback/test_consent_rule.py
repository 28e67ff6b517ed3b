"""Consent as a rule over everything written, not per call site.

A run answers requests carrying personal data for three tenants with different policies, takes
feedback with corrections, and builds every training set the drift monitor could build. Then every
blob outside `results/` (the tenant's own answer, its deliverable) is searched:
- no email, phone, card number or IBAN that was sent is stored anywhere;
- the text of a tenant whose policy keeps no text (contoso) is stored nowhere;
- a shared training set holds only tenants that share for training; a tenant's own set only it.
"""

from __future__ import annotations

from datetime import date

from shared.drift.training_set import Shortfall, TrainingSet, TrainingSetBuilder
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import RecordingReplySender
from tests.unit.feedback.conftest import (
    answer,
    build_runtime,
    devhost_registry,
    feedback_body,
    feedback_message,
)

PERSONAL = {
    "email": "ann.oakley@example.org",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
}
POLICIES = {
    "tailwind": {"log_prompts": True, "share_for_training": True, "min_training_examples": 1},
    "contoso": {"log_prompts": False, "share_for_training": True, "min_training_examples": 1},
    "fabrikam": {
        "log_prompts": True,
        "share_for_training": False,
        "allow_tuning": True,
        "min_training_examples": 1,
    },
}


def marker(tenant: str) -> str:
    return f"qqmark{tenant}qq"


def prompt(tenant: str, i: int) -> str:
    return (
        f"{marker(tenant)} question {i}: write to {PERSONAL['email']} or call {PERSONAL['phone']}, "
        f"card {PERSONAL['card']}, account {PERSONAL['iban']}"
    )


async def run(rt: Runtime) -> None:
    for tenant in POLICIES:
        for i in range(4):
            request_id = f"{tenant}-{i}"
            await answer(rt, tenant, request_id, prompt(tenant, i))
            body = feedback_body(
                tenant,
                request_id,
                "down" if i % 2 else "up",
                correction=f"{marker(tenant)} corrected: mail {PERSONAL['email']}",
                labels=[f"{marker(tenant)}-label", "4111111111111111", "DE89370400440532013000"],
            )
            await rt.feedback.handle_message(feedback_message(body, message_id=f"f-{request_id}"))


async def build_sets(rt: Runtime, store: MemoryBlobStore) -> dict[str, TrainingSet]:
    registry = await rt.registry.get()
    builder = TrainingSetBuilder(store, rt.feedback_store, rt.inference_log)
    built: dict[str, TrainingSet] = {}
    for tenant in registry.tenants:
        for scope in ("tenant", "shared"):
            result = await builder.build(
                registry,
                tenant,
                scope,
                dataset_id=f"ds-{scope}-{tenant.id}",
                end=date(2025, 1, 2),
                days=3,
                min_examples=1,
                drift_report=None,
                created_at=rt.clock(),
            )
            if not isinstance(result, Shortfall):
                built[f"{scope}:{tenant.id}"] = result
    return built


def kept_blobs(store: MemoryBlobStore) -> dict[str, str]:
    return {
        f"{container}/{name}": bytes(data).decode("utf-8", "replace")
        for (container, name), data in store.blobs.items()
        if container != names.RESULTS_CONTAINER
    }


async def test_no_personal_data_and_no_text_without_consent_is_kept_anywhere() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(**POLICIES), store, replies)
    await run(rt)
    built = await build_sets(rt, store)
    blobs = kept_blobs(store)
    assert any(n.startswith("inference-log/") for n in blobs)
    assert any(n.startswith("training/") for n in blobs)
    for name, text in blobs.items():
        for kind, value in PERSONAL.items():
            assert value not in text, f"{kind} kept in {name}"
            assert value.replace(" ", "") not in text, f"{kind} kept in {name}"
        assert marker("contoso") not in text, f"contoso's text kept in {name}"
    # what consenting tenants said is kept (scrubbed), so the search above could find it
    assert any(marker("fabrikam") in t for t in blobs.values())
    assert "tenant:contoso" not in built  # nothing of contoso's may train anything


async def test_training_sets_hold_only_the_tenants_their_scope_allows() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(**POLICIES), store, replies)
    await run(rt)
    built = await build_sets(rt, store)
    assert built, "no training set was built: the rule below would pass vacuously"
    for key, dataset in built.items():
        scope, owner = key.split(":")
        text = store.text(names.TRAINING_CONTAINER, dataset.blob.split("/", 1)[1])
        present = {t for t in POLICIES if marker(t) in text}
        if scope == "tenant":
            assert present == {owner}, key
            assert dataset.tenants == (owner,)
        else:  # a model other tenants use: only those that share (tailwind); contoso keeps no text
            assert present == {"tailwind"}, key
            assert dataset.tenants == ("tailwind",)


def test_disguised_personal_data_is_normalised_before_it_is_scrubbed() -> None:
    from shared.feedback.consent import Consent
    from shared.tenancy.registry import DataPolicy

    disguised = [
        "\uff42\uff4f\uff42\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
        " ".join(["\uff14\uff11\uff11\uff11"] + ["\uff11" * 4] * 3),
        "b\u200bob@example.com",
        "right\u202eleft\x00 \ufeffend",
    ]
    kept = Consent().keep_now(DataPolicy(log_prompts=True), disguised)
    assert [k.text for k in kept] == ["<EMAIL>", "<CARD>", "<EMAIL>", "rightleft end"]
