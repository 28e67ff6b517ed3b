"""Fixtures that start real local stand-ins on free loopback ports and always stop them."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.models",
    "tests.fixtures.redis",
    "tests.fixtures.servicebus",
]
