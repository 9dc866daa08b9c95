"""Fixtures shared by the pipeline tests."""

import pytest

from tests.conftest import s3_node_environment


@pytest.fixture(scope="module")
def ray_instance(_moto_server):
    """A local Ray of 2 CPUs for the module's generate runs. Its workers inherit the environment at start,
    the loopback S3 endpoint and its fake credentials included: dppp never sends credentials to its actors
    (Ray logs what it sends), so they are set first, as a cluster's nodes would have their own."""
    ray = pytest.importorskip("ray")
    with s3_node_environment(_moto_server):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
