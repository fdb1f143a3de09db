"""The monitor's tests use the API's fixtures: a node (in-process app under a real uvicorn) on a real anvil."""

from tests.harness import chain_api  # noqa: F401 - fixture
