"""The simulator's fine-tuning: jobs by the clock, validation, events, tuned quality, the judge.

The job state is driven by a fake clock (no sleeping); the SDK-level checks start a simulator on
a free loopback port with that clock and call it with the real `openai` client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from devhost.models import (
    FineTuningConfig,
    RunningSimulator,
    Simulator,
    judge_score,
    start_simulator,
    tuned_quality,
    verdict_of,
)
from devhost.models.finetuning import ApiError, FineTuning, base_for_model, model_family
from devhost.models.training_data import TrainingDataError, examples_by_topic, parse_chat_jsonl
from tests.fixtures.models import TEST_API_KEY, make_models_config, model_deployment

API_VERSION = "2024-10-21"
PHASES = {"validating_s": 2.0, "queued_s": 3.0, "running_s": 5.0}
BASE = model_deployment(
    "pool", model="gpt-4o-mini", quality=0.6, quality_by_topic={"billing": 0.5, "legal": 0.7}
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def example(topic: str = "billing", i: int = 0) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are Fabrikam's assistant."},
            {"role": "user", "content": f"Question {i} about my invoice #{topic}"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
    }


def jsonl(*examples: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(e) for e in examples).encode()


def billing(n: int) -> bytes:
    return jsonl(*(example("billing", i) for i in range(n)))


def service(clock: Clock, **fine_tuning: Any) -> FineTuning:
    config = FineTuningConfig.model_validate({**PHASES, **fine_tuning})
    return FineTuning(config, lambda: [BASE], clock=clock, wall=lambda: 1_700_000_000.0)


def create(ft: FineTuning, data: bytes, **body: Any) -> Any:
    stored = ft.files.add(data, "train.jsonl", "fine-tune")
    return ft.create_job({"model": "gpt-4o-mini-2024-07-18", "training_file": stored.id, **body})


# ---- status by the clock --------------------------------------------------------------------


def test_a_job_moves_through_its_phases_by_the_clock() -> None:
    clock = Clock()
    ft = service(clock)
    job = create(ft, billing(20), suffix="fab-v2", hyperparameters={"n_epochs": 2})
    seen = []
    for t in (0.0, 1.99, 2.0, 4.99, 5.0, 9.99, 10.0, 500.0):
        clock.now = 1000.0 + t
        seen.append(ft.job(job.id).describe(clock()))
    assert [d["status"] for d in seen] == [
        "validating_files",
        "validating_files",
        "queued",
        "queued",
        "running",
        "running",
        "succeeded",
        "succeeded",
    ]
    running, done = seen[5], seen[6]
    assert running["fine_tuned_model"] is None
    assert running["result_files"] == []
    assert running["trained_tokens"] is None
    assert running["finished_at"] is None
    assert done["fine_tuned_model"] == f"gpt-4o-mini-2024-07-18.ft-{job.hex}-fab-v2"
    assert done["finished_at"] == 1_700_000_010
    assert done["hyperparameters"]["n_epochs"] == 2
    assert done["trained_tokens"] > 0
    assert done["error"] is None
    [result] = done["result_files"]
    csv = ft.file(result).data.decode()
    assert csv.splitlines()[0].startswith("step,train_loss,train_mean_token_accuracy")
    assert ft.file(result).purpose == "fine-tune-results"


def test_trained_tokens_count_every_epoch() -> None:
    clock = Clock()
    ft = service(clock)
    one = create(ft, billing(12), hyperparameters={"n_epochs": 1})
    three = create(ft, billing(12), hyperparameters={"n_epochs": 3})
    assert three.trained_tokens == 3 * one.trained_tokens
    assert one.examples_by_topic == {"billing": 12}


@pytest.mark.parametrize(
    ("data", "code", "param", "words"),
    [
        (b'{"messages": []}\n', "invalid_file_format", "training_file", "Line 1"),
        (billing(3) + b"\nnot json", "invalid_file_format", "training_file", "Line 4"),
        (billing(9), "invalid_n_examples", "training_file", "at least 10 examples"),
    ],
)
def test_bad_training_data_fails_the_job_after_validation(
    data: bytes, code: str, param: str, words: str
) -> None:
    clock = Clock()
    ft = service(clock)
    job = create(ft, data)
    clock.now += 1.0
    early = job.describe(clock())
    assert (early["status"], early["error"]) == ("validating_files", None)
    clock.now += 1.0
    failed = job.describe(clock())
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == code
    assert failed["error"]["param"] == param
    assert words in failed["error"]["message"]
    assert failed["fine_tuned_model"] is None
    clock.now += 100.0
    assert job.describe(clock())["status"] == "failed"


def test_an_unknown_base_model_fails_the_job() -> None:
    clock = Clock()
    ft = service(clock)
    stored = ft.files.add(billing(12), "t.jsonl", "fine-tune")
    job = ft.create_job({"model": "gpt-5-ultra", "training_file": stored.id})
    clock.now += 2.0
    error = job.describe(clock())["error"]
    assert (error["code"], error["param"]) == ("invalid_model", "model")


def test_a_bad_validation_file_names_it() -> None:
    clock = Clock()
    ft = service(clock)
    bad = ft.files.add(b"{}", "v.jsonl", "fine-tune")
    job = create(ft, billing(12), validation_file=bad.id)
    clock.now += 2.0
    assert job.describe(clock())["error"]["param"] == "validation_file"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"training_file": "file-nope"}, "training_file"),
        ({"suffix": "has spaces"}, "suffix"),
        ({"suffix": "x" * 41}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters"),
        ({"hyperparameters": {"lora_rank": 8}}, "hyperparameters"),
        ({"model": ""}, "model"),
    ],
)
def test_requests_the_api_refuses_are_400(body: dict[str, Any], param: str) -> None:
    ft = service(Clock())
    stored = ft.files.add(billing(12), "t.jsonl", "fine-tune")
    with pytest.raises(ApiError) as err:
        ft.create_job({"model": "gpt-4o-mini", "training_file": stored.id, **body})
    assert (err.value.status, err.value.param) == (400, param)


def test_a_results_file_is_not_training_data() -> None:
    ft = service(Clock())
    stored = ft.files.add(billing(12), "t.jsonl", "fine-tune-results")
    with pytest.raises(ApiError, match="purpose"):
        ft.create_job({"model": "gpt-4o-mini", "training_file": stored.id})


def test_cancel_stops_a_running_job_and_not_a_finished_one() -> None:
    clock = Clock()
    ft = service(clock)
    job = create(ft, billing(12))
    clock.now += 6.0
    assert ft.cancel(job.id).status(clock()) == "cancelled"
    clock.now += 100.0
    assert job.describe(clock())["status"] == "cancelled"
    assert job.describe(clock())["finished_at"] == 1_700_000_006
    assert ft.cancel(job.id).status(clock()) == "cancelled"  # again: nothing changes
    done = create(ft, billing(12))
    clock.now += 10.0
    with pytest.raises(ApiError, match="already completed"):
        ft.cancel(done.id)


# ---- events -----------------------------------------------------------------------------------


def test_events_are_newest_first_and_page_with_after() -> None:
    clock = Clock()
    ft = service(clock)
    job = create(ft, billing(40))
    clock.now += 2.5
    early = [e["message"] for e in ft.events_page(job.id, None, 20)["data"]]
    assert early[0] == "Files validated, moving job to queued"
    assert early[-1] == f"Created fine-tuning job: {job.id}"
    clock.now += 100.0
    page = ft.events_page(job.id, None, 20)
    events = page["data"]
    assert events[0]["message"] == "The job has successfully completed"
    times = [e["created_at"] for e in events]
    assert times == sorted(times, reverse=True)
    metrics = [e for e in events if e["type"] == "metrics"]
    steps = [e["data"]["step"] for e in metrics]
    assert steps == sorted(steps, reverse=True)
    assert len(steps) == 5
    assert len({e["id"] for e in events}) == len(events)
    first = ft.events_page(job.id, None, 3)
    rest = ft.events_page(job.id, first["data"][-1]["id"], 100)
    assert first["has_more"]
    assert not rest["has_more"]
    assert [e["id"] for e in first["data"] + rest["data"]] == [e["id"] for e in events]


def test_a_failed_and_a_cancelled_job_say_so_last() -> None:
    clock = Clock()
    ft = service(clock)
    failed = create(ft, billing(2))
    cancelled = create(ft, billing(12))
    clock.now += 3.0
    ft.cancel(cancelled.id)
    clock.now += 50.0
    newest = ft.events_page(failed.id, None, 1)["data"][0]
    assert newest["level"] == "error"
    assert "at least 10" in newest["message"]
    messages = [e["message"] for e in ft.events_page(cancelled.id, None, 20)["data"]]
    assert messages[0] == "Job cancelled"
    assert "The job has successfully completed" not in messages


# ---- training data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "role"),
        ('{"messages": [{"role": "user"}]}', "content"),
        ('{"messages": [{"role": "user", "content": 5}]}', "content"),
        ('{"messages": [{"role": "user", "content": "a", "weight": 1}]}', "weight"),
        ("[1, 2]", "JSON object"),
        ('{"prompt": "a", "completion": "b"}', "messages"),
    ],
)
def test_chat_jsonl_rules(line: str, words: str) -> None:
    with pytest.raises(TrainingDataError, match=words) as err:
        parse_chat_jsonl(line.encode())
    assert err.value.code == "invalid_file_format"


def test_chat_jsonl_accepts_a_bom_blank_lines_parts_and_tool_calls() -> None:
    parts = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi #Legal"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "done", "weight": 0},
        ]
    }
    data = b"\xef\xbb\xbf" + jsonl(example("billing"), parts) + b"\n\n"
    examples = parse_chat_jsonl(data)
    assert len(examples) == 2
    assert examples_by_topic(examples) == {"billing": 1, "legal": 1}
    with pytest.raises(TrainingDataError, match="UTF-8"):
        parse_chat_jsonl(b"\xff\xfe")


def test_base_models_match_with_or_without_a_version() -> None:
    judge = model_deployment("j", model="gpt-4o-mini", judge=True)
    other = model_deployment("phi", model="gpt-4o-mini", kind="ai_inference")
    assert model_family("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert model_family("gpt-35-turbo-0613") == "gpt-35-turbo"
    assert base_for_model("gpt-4o-mini-2024-07-18", [judge, other, BASE]) is BASE
    assert base_for_model("gpt-4o-mini", [BASE]) is BASE
    assert base_for_model("gpt-4o", [BASE]) is None


# ---- tuned quality ----------------------------------------------------------------------------


def test_the_tuned_quality_formula() -> None:
    ft = FineTuningConfig(gain=0.2, examples_for_full_gain=40, max_quality=0.9)
    assert tuned_quality(0.5, 0, ft) == 0.5
    assert tuned_quality(0.5, 10, ft) == pytest.approx(0.55)
    assert tuned_quality(0.5, 40, ft) == pytest.approx(0.7)
    assert tuned_quality(0.5, 400, ft) == pytest.approx(0.7)
    assert tuned_quality(0.8, 40, ft) == pytest.approx(0.9)  # capped at max_quality
    assert tuned_quality(0.95, 40, ft) == 0.95  # never below the base


def tuned_simulator(**base_fields: Any) -> Simulator:
    base = model_deployment("pool", model="gpt-4o-mini", **base_fields)
    config = make_models_config(
        base, fine_tuning={"gain": 0.2, "examples_for_full_gain": 40, "max_quality": 0.9}
    )
    sim = Simulator(config)
    sim.put_deployment(
        model_deployment(
            "tuned",
            model="gpt-4o-mini.ft-1",
            quality=base.quality,
            quality_by_topic=base.quality_by_topic,
            tuned={"base": "pool", "examples_by_topic": {"billing": 20, "legal": 80}},
        )
    )
    return sim


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def test_a_tuned_deployment_improves_its_topics_and_follows_its_base_on_others() -> None:
    sim = tuned_simulator(
        quality=0.6,
        quality_by_topic={"billing": 0.5, "legal": 0.75},
        quality_schedule=[{"after_requests": 2, "quality": 0.3}],
    )
    tuned, base = sim.deployment_config("tuned"), sim.deployment_config("pool")
    assert tuned is not None
    assert base is not None

    def q(text: str) -> float:
        return sim.current_quality(tuned, "t", user(text))

    assert q("why? #billing") == pytest.approx(0.6)  # 0.5 + 0.2 * 20/40
    assert q("contract #legal") == pytest.approx(0.9)  # 0.75 + 0.2, capped at 0.9
    assert q("hello") == pytest.approx(0.6)  # not trained: the base's
    for _ in range(2):  # the base decays after 2 requests; tuning has no schedule of its own
        sim.quality_model.score(base, "t", user("hello"))
    assert q("hello") == pytest.approx(0.3)
    assert q("why? #billing") == pytest.approx(0.6)  # the base's topic quality still holds


def test_a_tuned_deployment_whose_base_is_gone_uses_what_it_copied() -> None:
    sim = tuned_simulator(quality=0.6, quality_by_topic={"billing": 0.5})
    assert sim.remove_deployment("pool")
    tuned = sim.deployment_config("tuned")
    assert tuned is not None
    assert sim.current_quality(tuned, "t", user("#billing")) == pytest.approx(0.6)
    assert sim.current_quality(tuned, "t", user("hi")) == pytest.approx(0.6)


# ---- the judge --------------------------------------------------------------------------------


def judged(answer: str) -> int:
    prompt = f"Rate similarity 1-5.\n<reference>ref</reference>\n<answer>{answer}</answer>"
    return judge_score(user(prompt))


def test_the_judge_scores_from_the_verdict_mark() -> None:
    goods = {judged(f"answer {i} [sim: good answer]") for i in range(40)}
    poors = {judged(f"answer {i} [sim: poor answer]") for i in range(40)}
    assert goods == {4, 5}
    assert poors == {1, 2}
    assert judged("no mark at all") == 3
    assert judge_score(user("no answer section")) == 3
    assert judged("same [sim: good answer]") == judged("same [sim: good answer]")


# ---- over HTTP, with the openai SDK -----------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[RunningSimulator]:
    config = make_models_config(
        BASE,
        model_deployment("judge", model="gpt-4o", judge=True),
        answer_verdicts=True,
        fine_tuning=PHASES,
    )
    running = await start_simulator(config, clock=clock)
    try:
        yield running
    finally:
        await running.stop()


def aoai(sim: RunningSimulator) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key=TEST_API_KEY, api_version=API_VERSION, max_retries=0
    )


async def test_the_sdk_runs_a_job_to_a_deployable_model(
    sim: RunningSimulator, clock: Clock
) -> None:
    async with aoai(sim) as client:
        uploaded = await client.files.create(file=("train.jsonl", billing(20)), purpose="fine-tune")
        assert (uploaded.status, uploaded.purpose, uploaded.bytes) == (
            "processed",
            "fine-tune",
            len(billing(20)),
        )
        assert (await client.files.retrieve(uploaded.id)).filename == "train.jsonl"
        assert (await client.files.content(uploaded.id)).content == billing(20)
        job = await client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=uploaded.id, seed=7
        )
        assert job.status == "validating_files"
        clock.now += 6.0
        assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "running"
        clock.now += 5.0
        done = await client.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "succeeded"
        assert done.seed == 7
        assert done.fine_tuned_model == f"gpt-4o-mini-2024-07-18.ft-{job.id[6:]}"
        listed = [j.id async for j in client.fine_tuning.jobs.list()]
        assert listed == [job.id]
        events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=2)]
        assert events[0].message == "The job has successfully completed"
        assert events[-1].message == f"Created fine-tuning job: {job.id}"
        results = {f.id async for f in client.files.list(purpose="fine-tune-results")}
        assert results == set(done.result_files)
        deleted = await client.files.delete(uploaded.id)
        assert deleted.deleted
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await client.fine_tuning.jobs.retrieve("ftjob-nope")


async def test_the_sdk_sees_refusals_and_cancels(sim: RunningSimulator, clock: Clock) -> None:
    async with aoai(sim) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-x")
        assert err.value.body is not None
        uploaded = await client.files.create(file=("t.jsonl", billing(12)), purpose="fine-tune")
        job = await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
        cancelled = await client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
    bad = openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key="wrong", api_version=API_VERSION, max_retries=0
    )
    async with bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.files.list()


async def test_the_judge_answers_with_a_bare_score(sim: RunningSimulator) -> None:
    prompt = "<reference>r</reference><answer>fine [sim: good answer]</answer>"
    async with aoai(sim) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="judge", messages=user(prompt), max_tokens=5
        )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert text in {"4", "5"}
    assert verdict_of(text or "") is None  # never marked
    assert raw.headers["x-sim-judge-score"] == text
    assert "x-sim-verdict" not in raw.headers


async def test_admin_tuned_serves_a_tuned_deployment(sim: RunningSimulator) -> None:
    body = {"base": "pool", "model": "phi-lora-1", "training_jsonl": billing(40).decode()}
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{sim.url}/admin/tuned/fab-lora", json=body) as resp:
            assert resp.status == 201
            created = await resp.json()
        async with http.put(
            f"{sim.url}/admin/tuned/x", json={**body, "training_jsonl": "nope"}
        ) as resp:
            assert resp.status == 400
            assert "Line 1" in (await resp.json())["error"]["message"]
        async with http.put(f"{sim.url}/admin/tuned/x", json={**body, "base": "gone"}) as resp:
            assert resp.status == 404
    assert created["tuned"]["examples_by_topic"] == {"billing": 40}
    async with aoai(sim) as client:
        tuned = await client.chat.completions.with_raw_response.create(
            model="fab-lora", messages=user("refund? #billing")
        )
        base = await client.chat.completions.with_raw_response.create(
            model="pool", messages=user("refund? #billing")
        )
    assert float(tuned.headers["x-sim-quality"]) == pytest.approx(0.62)  # 0.5 + 0.15 * 40/50
    assert float(base.headers["x-sim-quality"]) == pytest.approx(0.5)
    assert tuned.parse().model == "phi-lora-1"
