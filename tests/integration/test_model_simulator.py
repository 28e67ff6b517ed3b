"""The models simulator over real HTTP, called by the real SDKs (openai, azure-ai-inference)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from azure.ai.inference.aio import ChatCompletionsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from devhost.models import RunningSimulator, ThreadedSimulator, verdict_of
from devhost.models.tokens import estimate_prompt_tokens
from tests.fixtures.models import (
    TEST_API_KEY,
    SimulatorFactory,
    make_models_config,
    model_deployment,
    stack_deployments,
)

API_VERSION = "2024-10-21"
HELLO: Any = [{"role": "user", "content": "Hello, simulator: how are you today?"}]
REPO = Path(__file__).resolve().parents[2]


def aoai(sim: RunningSimulator, key: str = TEST_API_KEY, **kw: Any) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key=key, api_version=API_VERSION, max_retries=0, **kw
    )


def inference(sim: RunningSimulator, key: str = TEST_API_KEY) -> ChatCompletionsClient:
    return ChatCompletionsClient(
        endpoint=sim.url + "/models", credential=AzureKeyCredential(key), retry_total=0
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---- completions --------------------------------------------------------------------------


async def test_azure_openai_completion_parses_with_usage(model_simulator: RunningSimulator) -> None:
    async with aoai(model_simulator) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini-pool-a", messages=HELLO, user="contoso"
        )
        completion = raw.parse()
        again = await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.message.content.startswith("Re: Hello, simulator:")
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert again.choices[0].message.content == choice.message.content  # deterministic
    assert raw.headers["x-sim-quality"] == "0.8000"
    assert raw.headers["x-request-id"]


async def test_max_tokens_bounds_the_completion(model_simulator: RunningSimulator) -> None:
    async with aoai(model_simulator) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini-pool-b", messages=HELLO, max_tokens=4, n=2
        )
    assert len(completion.choices) == 2
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8


async def test_ai_inference_completion_parses_with_usage(model_simulator: RunningSimulator) -> None:
    async with inference(model_simulator) as client:
        result = await client.complete(model="phi-4-pool", messages=HELLO, max_tokens=50)
        aoai_model = await client.complete(model="gpt-4o-mini-pool-a", messages=HELLO)
    assert result.model == "Phi-4"
    assert result.choices[0].message.content.startswith("Re: Hello")
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert aoai_model.model == "gpt-4o-mini"  # AI Services also serves its AOAI deployments


async def test_bearer_token_is_accepted(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{model_simulator.url}/models/chat/completions?api-version=2024-05-01-preview"
    body = {"model": "phi-4-pool", "messages": HELLO}
    async with http.post(
        url, json=body, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    ) as resp:
        assert resp.status == 200
    async with http.post(
        url.replace("/models", ""), json=body, headers={"api-key": TEST_API_KEY}
    ) as r:
        assert r.status == 200


# ---- errors -------------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_401(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with aoai(model_simulator, key="wrong") as client:
        with pytest.raises(openai.AuthenticationError) as err:
            await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
    assert err.value.status_code == 401
    async with inference(model_simulator, key="wrong") as ic:
        with pytest.raises(ClientAuthenticationError) as az_err:
            await ic.complete(model="phi-4-pool", messages=HELLO)
    assert az_err.value.status_code == 401
    url = f"{model_simulator.url}/openai/deployments/gpt-4o-mini-pool-a/chat/completions"
    async with http.post(url, params={"api-version": API_VERSION}, json={}) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["error"]["code"] == "401"
    assert "missing" in body["error"]["message"]
    assert model_simulator.stats()["rejected"]["unauthorized"] == 3


async def test_unknown_deployment_is_404_deployment_not_found(
    model_simulator: RunningSimulator,
) -> None:
    async with aoai(model_simulator) as client:
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="no-such-deployment", messages=HELLO)
        # an ai_inference deployment is not on the Azure OpenAI route
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="phi-4-pool", messages=HELLO)
    assert err.value.status_code == 404
    assert isinstance(err.value.body, dict)
    assert err.value.body["code"] == "DeploymentNotFound"
    async with inference(model_simulator) as ic:
        with pytest.raises(ResourceNotFoundError) as az_err:
            await ic.complete(model="no-such-deployment", messages=HELLO)
    assert az_err.value.error is not None
    assert az_err.value.error.code == "DeploymentNotFound"


async def test_bad_requests_are_400_with_a_message(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    base = f"{model_simulator.url}/openai/deployments/gpt-4o-mini-pool-a/chat/completions"
    headers = {"api-key": TEST_API_KEY, "content-type": "application/json"}
    q = {"api-version": API_VERSION}
    cases: list[tuple[str, dict[str, str], str]] = [
        ("{not json", q, "not valid JSON"),
        ("[1, 2]", q, "JSON object"),
        ("{}", q, "'messages' is required"),
        ('{"messages": [{"content": "x"}]}', q, "messages[0]"),
        ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', q, "max_tokens"),
        ('{"messages": [{"role": "user", "content": "x"}]}', {}, "api-version"),
    ]
    for data, params, expected in cases:
        async with http.post(base, data=data, params=params, headers=headers) as resp:
            assert resp.status == 400, data
            body = await resp.json()
            assert expected in body["error"]["message"]
    async with http.post(
        f"{model_simulator.url}/models/chat/completions",
        params=q,
        json={"messages": HELLO},
        headers=headers,
    ) as resp:
        assert resp.status == 400
        assert "'model' is required" in (await resp.json())["error"]["message"]
    async with http.get(f"{model_simulator.url}/nowhere", headers=headers) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["message"] == "Resource not found"


# ---- throttling ---------------------------------------------------------------------------


async def test_token_limit_gives_rate_limit_error_with_retry_headers(
    model_simulator_factory: SimulatorFactory,
) -> None:
    sim = await model_simulator_factory(
        make_models_config(model_deployment("small", tpm=1000, rpm=600))
    )
    async with aoai(sim) as client:
        ok = await client.chat.completions.with_raw_response.create(
            model="small", messages=HELLO, max_tokens=400
        )
        charge = 400 + estimate_prompt_tokens(HELLO)
        assert ok.headers["x-ratelimit-remaining-tokens"] == str(1000 - charge)
        assert ok.headers["x-ratelimit-remaining-requests"] == "99"
        await client.chat.completions.create(model="small", messages=HELLO, max_tokens=400)
        with pytest.raises(openai.RateLimitError) as err:
            await client.chat.completions.create(model="small", messages=HELLO, max_tokens=400)
    headers = err.value.response.headers
    retry_ms = int(headers["retry-after-ms"])
    assert 59_000 < retry_ms <= 60_000
    assert headers["retry-after"] == "60"
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * charge)
    assert headers["x-ratelimit-remaining-requests"] == "98"
    assert isinstance(err.value.body, dict)
    assert err.value.body["code"] == "429"
    assert "exceeded token rate limit" in err.value.body["message"]
    small = sim.stats()["deployments"]["small"]
    assert (small["requests"], small["ok"], small["throttled"]) == (3, 2, 1)


async def test_request_limit_gives_429_to_both_sdks(
    model_simulator_factory: SimulatorFactory,
) -> None:
    sim = await model_simulator_factory(
        make_models_config(
            model_deployment("tiny", tpm=1000),  # derived: 6 RPM = 1 per 10 s
            model_deployment("tiny-phi", kind="ai_inference", rpm=6),
        ),
        clock=lambda: 1000.0,  # frozen at the start of a 10-second window
    )
    async with aoai(sim) as client:
        await client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10)
        with pytest.raises(openai.RateLimitError) as err:
            await client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10)
    assert err.value.response.headers["retry-after-ms"] == "10000"
    assert "call rate limit" in str(err.value)
    async with inference(sim) as ic:
        await ic.complete(model="tiny-phi", messages=HELLO)
        with pytest.raises(HttpResponseError) as az_err:
            await ic.complete(model="tiny-phi", messages=HELLO)
    assert az_err.value.status_code == 429
    assert az_err.value.response is not None
    az_headers: Any = getattr(az_err.value.response, "headers", {})
    assert az_headers["retry-after"] == "10"
    assert az_headers["x-ratelimit-remaining-requests"] == "0"
    sim.reset()
    async with aoai(sim) as client:
        await client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10)


# ---- faults -------------------------------------------------------------------------------


async def test_faults_set_at_run_time_through_the_admin_api(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    admin = f"{model_simulator.url}/admin/faults"
    async with http.post(admin, json={"deployment": "gpt-4o-mini-pool-a", "kind": "503"}) as r:
        assert r.status == 201
        assert (await r.json())["faults"][0]["kind"] == "503"
    async with aoai(model_simulator) as client:
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
        assert err.value.status_code == 503
        await client.chat.completions.create(model="gpt-4o-mini-pool-b", messages=HELLO)

        async with http.delete(admin, params={"deployment": "gpt-4o-mini-pool-a"}) as r:
            assert (await r.json())["cleared"] == 1
        await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)

        fault = {"kind": "500", "rate": 0.5, "retry_after_s": 2}
        async with http.post(admin, json={"deployment": "*", "faults": [fault]}) as r:
            assert r.status == 201
        outcomes: list[int | str] = []
        for _ in range(4):
            try:
                await client.chat.completions.create(model="contoso-gpt-4o", messages=HELLO)
                outcomes.append(200)
            except openai.InternalServerError as e:
                outcomes.append(f"{e.status_code} after {e.response.headers['retry-after']}")
        assert outcomes == [200, "500 after 2", 200, "500 after 2"]
        async with http.get(admin) as r:
            [described] = (await r.json())["faults"]
            assert described["fired"] == 2
        async with http.delete(admin) as r:
            assert (await r.json())["cleared"] == 1

    async with http.post(admin, json={"deployment": "nope", "kind": "500"}) as r:
        assert r.status == 404
    async with http.post(admin, json={"deployment": "phi-4-pool", "kind": "418"}) as r:
        assert r.status == 400
    stats = model_simulator.stats()
    assert stats["deployments"]["gpt-4o-mini-pool-a"]["faults"] == 1
    assert stats["deployments"]["contoso-gpt-4o"]["faults"] == 2


async def test_injected_errors_reach_the_inference_sdk(model_simulator: RunningSimulator) -> None:
    model_simulator.add_fault("phi-4-pool", {"kind": "500", "count": 1})
    async with inference(model_simulator) as ic:
        with pytest.raises(HttpResponseError) as err:
            await ic.complete(model="phi-4-pool", messages=HELLO)
        assert err.value.status_code == 500
        assert (await ic.complete(model="phi-4-pool", messages=HELLO)).choices


async def test_timeout_and_disconnect_faults(model_simulator: RunningSimulator) -> None:
    model_simulator.add_fault("gpt-4o-mini-pool-a", {"kind": "timeout", "count": 1, "hang_s": 5})
    model_simulator.add_fault("gpt-4o-mini-pool-b", {"kind": "disconnect", "count": 1})
    async with aoai(model_simulator, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
        assert time.monotonic() - started < 2
        with pytest.raises(openai.APIConnectionError) as err:
            await client.chat.completions.create(model="gpt-4o-mini-pool-b", messages=HELLO)
        assert not isinstance(err.value, openai.APITimeoutError)
        # both were one-shot: the deployments answer again
        await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
        await client.chat.completions.create(model="gpt-4o-mini-pool-b", messages=HELLO)


async def test_a_fault_with_a_duration_ends_by_itself(model_simulator: RunningSimulator) -> None:
    model_simulator.add_fault("contoso-gpt-4o", {"kind": "503", "duration_s": 0.5})
    async with aoai(model_simulator) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="contoso-gpt-4o", messages=HELLO)
        await asyncio.sleep(0.55)
        await client.chat.completions.create(model="contoso-gpt-4o", messages=HELLO)


async def test_faults_from_the_config_file(model_simulator_factory: SimulatorFactory) -> None:
    sim = await model_simulator_factory(
        make_models_config(model_deployment("flaky", faults=[{"kind": "503", "count": 2}]))
    )
    async with aoai(sim) as client:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="flaky", messages=HELLO)
        await client.chat.completions.create(model="flaky", messages=HELLO)


async def test_stop_does_not_wait_for_a_hanging_call(
    model_simulator_factory: SimulatorFactory,
) -> None:
    sim = await model_simulator_factory()
    sim.add_fault("gpt-4o-mini-pool-a", {"kind": "timeout", "hang_s": 60})
    async with aoai(sim, timeout=30) as client:
        call = asyncio.create_task(
            client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO)
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 1.5
        with pytest.raises(openai.APIConnectionError):
            await call


# ---- latency, stats, admin ----------------------------------------------------------------


async def test_latency_grows_with_output_tokens(model_simulator_factory: SimulatorFactory) -> None:
    sim = await model_simulator_factory(
        make_models_config(model_deployment("slow", latency_ms={"base": 40, "per_token": 5}))
    )
    async with aoai(sim) as client:
        started = time.monotonic()
        await client.chat.completions.create(model="slow", messages=HELLO, max_tokens=2)
        short = time.monotonic() - started
        started = time.monotonic()
        long = await client.chat.completions.create(model="slow", messages=HELLO, max_tokens=40)
        longer = time.monotonic() - started
    assert long.usage is not None
    assert short >= 0.040 + 0.010
    assert longer >= 0.040 + 0.005 * long.usage.completion_tokens
    assert longer > short


async def test_stats_show_who_was_served_where(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with aoai(model_simulator) as client:
        await client.chat.completions.create(model="gpt-4o-mini-pool-a", messages=HELLO, user="t1")
        await client.chat.completions.create(
            model="gpt-4o-mini-pool-a",
            messages=HELLO,
            user="ignored-when-header-present",
            extra_headers={"x-tenant-id": "t2"},
        )
        await client.chat.completions.create(model="fabrikam-ft-v1", messages=HELLO, user="t2")
    async with inference(model_simulator) as ic:
        await ic.complete(model="phi-4-pool", messages=HELLO, headers={"x-tenant-id": "t1"})
    async with http.get(f"{model_simulator.url}/admin/stats") as r:
        stats = await r.json()
    assert stats["totals"]["ok"] == 4
    assert set(stats["tenants"]) == {"t1", "t2"}
    assert set(stats["tenants"]["t1"]["deployments"]) == {"gpt-4o-mini-pool-a", "phi-4-pool"}
    assert set(stats["tenants"]["t2"]["deployments"]) == {"gpt-4o-mini-pool-a", "fabrikam-ft-v1"}
    pool_a = stats["deployments"]["gpt-4o-mini-pool-a"]
    assert pool_a["requests"] == 2
    assert set(pool_a["tenants"]) == {"t1", "t2"}
    assert pool_a["prompt_tokens"] > 0
    assert pool_a["completion_tokens"] > 0
    fabrikam = stats["deployments"]["fabrikam-ft-v1"]["quality_mean"]
    assert fabrikam > stats["deployments"]["gpt-4o-mini-pool-a"]["quality_mean"]
    async with http.post(f"{model_simulator.url}/admin/reset") as r:
        assert r.status == 200
    async with http.get(f"{model_simulator.url}/admin/stats") as r:
        assert (await r.json())["totals"]["requests"] == 0


async def test_deployments_can_be_added_at_run_time(
    model_simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{model_simulator.url}/admin/deployments"
    spec = {"kind": "azure_openai", "model": "gpt-4o-mini.ft-v2", "quality": 0.97}
    async with http.put(f"{url}/fabrikam-ft-v2", json=spec) as r:
        assert r.status == 201
    async with http.put(f"{url}/bad", json={"quality": 7}) as r:
        assert r.status == 400
    async with aoai(model_simulator) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fabrikam-ft-v2", messages=HELLO
        )
    assert raw.headers["x-sim-quality"] == "0.9700"
    async with http.get(url) as r:
        names = [d["name"] for d in (await r.json())["deployments"]]
    assert "fabrikam-ft-v2" in names
    async with http.get(f"{model_simulator.url}/admin/health") as r:
        assert "fabrikam-ft-v2" in (await r.json())["deployments"]


def test_the_threaded_simulator_serves_sync_callers(
    model_simulator_session: ThreadedSimulator,
) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=model_simulator_session.url,
        api_key=TEST_API_KEY,
        api_version=API_VERSION,
        max_retries=0,
    )
    with client:
        done = client.chat.completions.create(model="contoso-gpt-4o", messages=HELLO)
    assert done.model == "gpt-4o"
    assert model_simulator_session.stats()["deployments"]["contoso-gpt-4o"]["ok"] == 1


# ---- the command line ---------------------------------------------------------------------


async def _simulator_process(config: Path, **pipes: Any) -> asyncio.subprocess.Process:
    """`python -m devhost.models` on a port of its choosing, as a user starts it."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "devhost.models", "--port", "0", "--config", str(config)),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        **pipes,
    )


async def test_the_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "models.json"
    config.write_text(json.dumps(make_models_config().model_dump()))
    proc = await _simulator_process(
        config, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        url = None
        async with asyncio.timeout(15):
            while url is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the simulator exited before it was ready"
                match = re.search(r"models simulator listening on (http://\S+)", line)
                url = match.group(1) if match else None
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/openai/deployments/gpt-4o-mini-pool-a/chat/completions",
                params={"api-version": API_VERSION},
                json={"messages": HELLO},
                headers={"api-key": TEST_API_KEY},
            ) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["usage"]["total_tokens"] > 0
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_command_line_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"api_keys": [], "deployments": [{"name": "d", "kind": "nope"}]}')
    proc = await _simulator_process(config, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(15):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "deployments.0.kind" in err.decode()
    assert "api_keys" in err.decode()


# ---- quality and verdicts -----------------------------------------------------------------


async def test_answer_verdicts_mark_replies_and_follow_the_quality_schedule(
    model_simulator_factory: SimulatorFactory,
) -> None:
    """The shipped deployments with answer_verdicts on, plus one that is always right for 2
    requests and then always wrong (so its verdicts are certain)."""
    flipping = model_deployment(
        "flipping",
        quality=1.0,
        quality_by_topic={"legal": 0.0},
        quality_schedule=[{"after_requests": 2, "quality": 0.0}],
    )
    sim = await model_simulator_factory(
        make_models_config(*stack_deployments(), flipping, answer_verdicts=True)
    )

    tuned_config = next(d for d in stack_deployments() if d.name == "fabrikam-ft-v1")
    decay_after = tuned_config.quality_schedule[0].after_requests  # the shipped config's step

    def ask(text: str) -> Any:
        return [{"role": "user", "content": text}]

    async with aoai(sim) as client:
        calls = client.chat.completions.with_raw_response
        legal = await calls.create(model="flipping", messages=ask("Can I sue? #Legal"))
        right = await calls.create(model="flipping", messages=HELLO, max_tokens=5, n=2)
        wrong = await calls.create(model="flipping", messages=HELLO)
        billing = await calls.create(model="gpt-4o-mini-pool-a", messages=ask("#billing refund?"))
        tuned = [
            await calls.create(model="fabrikam-ft-v1", messages=HELLO, user="fabrikam")
            for _ in range(decay_after + 1)
        ]

    assert (legal.headers["x-sim-topic"], legal.headers["x-sim-quality"]) == ("legal", "0.0000")
    assert legal.headers["x-sim-verdict"] == "poor"
    text = legal.parse().choices[0].message.content or ""
    assert text.startswith("Re: Can I sue?")
    assert text.endswith(" [sim: poor answer]")
    assert verdict_of(text) is False

    assert (right.headers["x-sim-topic"], right.headers["x-sim-verdict"]) == (
        "general",
        "good,good",
    )
    completion = right.parse()
    assert [verdict_of(c.message.content or "") for c in completion.choices] == [True, True]
    assert all(c.message.content == "Re: Hello, [sim: good answer]" for c in completion.choices)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 10  # within max_tokens, the marks' words counted

    assert wrong.headers["x-sim-quality"] == "0.0000"  # the 3rd request: after 2 served
    assert verdict_of(wrong.parse().choices[0].message.content or "") is False

    assert billing.headers["x-sim-quality"] == "0.8500"
    assert billing.headers["x-sim-topic"] == "billing"

    assert {r.headers["x-sim-quality"] for r in tuned[:decay_after]} == {"0.9200"}
    assert tuned[decay_after].headers["x-sim-quality"] == "0.5500"
    for r in tuned:
        choice = r.parse().choices[0].message.content or ""
        assert r.headers["x-sim-verdict"] == ("good" if verdict_of(choice) else "poor")
    stats = sim.stats()["deployments"]
    assert (stats["flipping"]["verdicts"], stats["flipping"]["good"]) == (4, 2)
    good = stats["fabrikam-ft-v1"]["good"]
    assert stats["fabrikam-ft-v1"]["verdicts"] == decay_after + 1
    expected = decay_after * 0.92 + 0.55
    assert expected - 0.12 * decay_after < good < expected + 0.07 * decay_after

    sim.reset()  # a reset starts the schedule (and the draws) again
    async with aoai(sim) as client:
        again = await client.chat.completions.with_raw_response.create(
            model="fabrikam-ft-v1", messages=HELLO
        )
    assert again.headers["x-sim-quality"] == "0.9200"
    assert again.headers["x-sim-verdict"] == tuned[0].headers["x-sim-verdict"]
