"""The bottom layer: what every component shares and nothing of ours is imported by.

    errors.py       the errors a user can act on (each with its exit code)
    schema.py       StrictModel, the base of every typed config
    config.py       YAML reading, --set overrides, validation into one ConfigError
    ray_cluster.py  starting or joining Ray, with its noise filtered

prompts, pipeline, trainer and dppp import it; it imports none of them (`make lint` checks).
"""

__version__ = "0.1.0"
