"""`POST /api/tenants/{tenant_id}/upload-sas`: a proven tenant gets a SAS that creates one blob
under its own `uploads/<tenant>/` prefix, checked against a real Azurite: the SAS writes that
blob, and no other name, and cannot read; a request naming a path outside the prefix is refused.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobClient, BlobServiceClient

import function_app
from devhost.azurite import Azurite
from shared.runtime import set_runtime
from shared.security.proof import ProofReason
from shared.security.tenant_upload_sas import (
    AccountKeySigner,
    UserDelegationSigner,
    grant_upload,
    signer_from_settings,
    upload_sas_response,
)
from shared.storage import names
from tests.security.tenant_proof_kit import NOW, Proven, proven_runtime, signer


def request(kind: str, file: str) -> bytes:
    return json.dumps({"kind": kind, "file": file}).encode()


async def test_the_sas_creates_that_one_blob_and_nothing_else(azurite: Azurite) -> None:
    sas_signer = AccountKeySigner(azurite.connection_string)
    file = f"up-{uuid.uuid4().hex[:8]}.jsonl"
    grant = await grant_upload(sas_signer, "contoso", request("batch", file))
    assert grant.blob == f"uploads/contoso/batch/{file}"
    async with BlobClient.from_blob_url(grant.url) as blob:
        await blob.upload_blob(b'{"messages": []}\n')
        with pytest.raises(HttpResponseError) as denied:
            await blob.download_blob()  # create and write only: no read
        assert denied.value.status_code == 403
    token = urlsplit(grant.url).query
    base = f"{sas_signer.account_url}/{names.UPLOADS_CONTAINER}"
    for other in (f"tailwind/batch/{file}", f"contoso/training/{file}", f"contoso/batch/x{file}"):
        async with BlobClient.from_blob_url(f"{base}/{other}?{token}") as elsewhere:
            with pytest.raises(HttpResponseError) as refused:
                await elsewhere.upload_blob(b"{}\n")
            assert refused.value.status_code == 403, other
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        uploads = blobs.get_container_client(names.UPLOADS_CONTAINER)
        written = [n async for n in uploads.list_blob_names(name_starts_with="")]
    assert f"contoso/batch/{file}" in written
    assert f"tailwind/batch/{file}" not in written


@pytest.mark.parametrize(
    "body",
    [
        request("batch", "../tailwind/batch/x.jsonl"),
        request("batch", "..%2ftailwind.jsonl"),
        request("batch", "\uff58.jsonl"),  # fullwidth x: a look-alike
        request("batch", "x.csv"),
        request("results", "x.jsonl"),
        request("batch", "a/b.jsonl"),
        b"not json",
        b"[]",
    ],
)
async def test_a_name_outside_the_prefix_is_refused(body: bytes) -> None:
    p = proven_runtime()
    status, answer = await upload_sas_response(
        p.runtime, "contoso", body, signer=AccountKeySigner(_LOCAL)
    )
    assert status == 400
    assert json.loads(answer)["error"] == "invalid_upload_request"


_LOCAL = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


async def test_an_unknown_tenant_gets_no_sas() -> None:
    p = proven_runtime()
    status, _ = await upload_sas_response(
        p.runtime, "globex", request("batch", "x.jsonl"), signer=AccountKeySigner(_LOCAL)
    )
    assert status == 404


async def _call(p: Proven, tenant: str, headers: dict[str, str], body: bytes) -> func.HttpResponse:
    path = f"/api/tenants/{tenant}/upload-sas"
    previous = set_runtime(p.runtime)
    try:
        response: func.HttpResponse = (
            await function_app.upload_sas_http.build().get_user_function()(
                func.HttpRequest(
                    "POST",
                    f"http://127.0.0.1:7071{path}",
                    headers=headers,
                    body=body,
                    route_params={"tenant_id": tenant},
                )
            )
        )
        return response
    finally:
        set_runtime(previous)


async def test_the_endpoint_answers_only_the_proven_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    p = proven_runtime()
    monkeypatch.setattr(
        "shared.security.tenant_upload_sas.runtime_signer", lambda rt: AccountKeySigner(_LOCAL)
    )
    body = request("training", "examples.jsonl")
    path = "/api/tenants/contoso/upload-sas"
    at = int(NOW.timestamp())
    contoso = signer(p.keys, "contoso").http_headers("POST", path, body, at=at)
    tailwind = signer(p.keys, "tailwind").http_headers("POST", path, body, at=at)
    refused = await _call(p, "contoso", tailwind, body)
    assert refused.status_code == 401
    assert json.loads(refused.get_body())["error"] == ProofReason.INVALID
    assert (await _call(p, "contoso", {}, body)).status_code == 401
    granted = await _call(p, "contoso", contoso, body)
    assert granted.status_code == 201
    answer = json.loads(granted.get_body())
    assert answer["blob"] == "uploads/contoso/training/examples.jsonl"
    assert (answer["permissions"], answer["sas"]) == ("cw", "service")
    assert "sp=cw" in answer["url"]


async def test_azure_signs_with_the_identitys_user_delegation_key() -> None:
    credential = DefaultAzureCredential()
    try:
        chosen = signer_from_settings(None, "https://st1.blob.core.windows.net", credential)
        assert isinstance(chosen, UserDelegationSigner)
        assert chosen.kind == "user_delegation"
        await chosen.close()
        assert signer_from_settings(None, None, None) is None
        assert isinstance(signer_from_settings(_LOCAL, None, None), AccountKeySigner)
    finally:
        await credential.close()
