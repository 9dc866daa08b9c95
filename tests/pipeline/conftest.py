"""Fixtures shared by the pipeline tests."""

import os

import pytest

from tests.conftest import FAKE_CREDENTIALS


@pytest.fixture(scope="module")
def ray_instance(_moto_server):
    """A local Ray of 2 CPUs for the module's generate runs. Its workers inherit the environment at start,
    the loopback S3 endpoint and its fake credentials included: dppp never sends credentials to its actors
    (Ray logs what it sends), so they are set first, as a cluster's nodes would have their own."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": _moto_server.endpoint_url}.items():
            patch.setenv(name, value)
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            patch.setenv(name, os.devnull)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
