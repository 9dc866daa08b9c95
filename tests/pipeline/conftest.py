"""Fixtures shared by the pipeline tests."""

import pytest


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray of 2 CPUs for the module's generate runs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
