"""A local stand-in for Azure OpenAI and Azure AI Inference deployments.

Serves the HTTP APIs that `openai.AsyncAzureOpenAI` and
`azure.ai.inference.aio.ChatCompletionsClient` call, with per-deployment TPM/RPM limits and real
429s, latency, injectable faults, per-tenant stats and a quality model (per deployment and
prompt topic, with a decay schedule; optionally a good/poor verdict marked on each reply), a
similarity judge, and Azure OpenAI fine-tuning: files, jobs, and deploying a fine-tuned model
through ARM, after which it serves chat with a better quality on the topics it was trained on.

    sim = await start_simulator(load_config("devhost/models.config.json"))   # port 0: a free one
    ... AsyncAzureOpenAI(azure_endpoint=sim.url, api_key="sim-key", api_version="2024-10-21")
    ... ChatCompletionsClient(endpoint=sim.url + "/models", credential=AzureKeyCredential(...))
    await sim.stop()

Or from a shell: `python -m devhost.models --port 8081 --config devhost/models.config.json`.
"""

from devhost.models.config import (
    ConfigError,
    DeploymentConfig,
    FineTuningConfig,
    LatencyConfig,
    QualityStep,
    SimulatorConfig,
    TunedFrom,
    load_config,
    parse_config,
)
from devhost.models.faults import FaultSpec
from devhost.models.judge import judge_score
from devhost.models.limiter import Decision, RateLimiter
from devhost.models.quality import (
    GOOD_ANSWER_MARK,
    POOR_ANSWER_MARK,
    QualityModel,
    ScheduledQuality,
    StaticQuality,
    VerdictModel,
    Verdicts,
    topic_of,
    tuned_quality,
    verdict_of,
)
from devhost.models.server import RunningSimulator, Simulator, start_simulator
from devhost.models.threaded import ThreadedSimulator, start_simulator_in_thread

DEFAULT_CONFIG_PATH = "devhost/models.config.json"

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "GOOD_ANSWER_MARK",
    "POOR_ANSWER_MARK",
    "ConfigError",
    "Decision",
    "DeploymentConfig",
    "FaultSpec",
    "FineTuningConfig",
    "LatencyConfig",
    "QualityModel",
    "QualityStep",
    "RateLimiter",
    "RunningSimulator",
    "ScheduledQuality",
    "Simulator",
    "SimulatorConfig",
    "StaticQuality",
    "ThreadedSimulator",
    "TunedFrom",
    "VerdictModel",
    "Verdicts",
    "judge_score",
    "load_config",
    "parse_config",
    "start_simulator",
    "start_simulator_in_thread",
    "topic_of",
    "tuned_quality",
    "verdict_of",
]
