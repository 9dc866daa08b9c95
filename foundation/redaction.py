"""Keeping credentials out of what a dataset records and what a user is shown: credential-named keys
dropped, URLs' user:password@ removed (from every sample's json and from dataset.json), and every message
the CLI prints scrubbed (redact_message)."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from dppp.foundation.storage.base import redact_url

# A key is secret when its last word(s) name a credential: 'aws_secret_access_key', 'password', 'hf_token'.
# Not 'max_tokens' or 'tokenizer': those are ordinary settings.
_SECRET_KEY = re.compile(
    r"(^|_)(secret|secrets|password|passwd|credential|credentials|api_?key|access_key|access_key_id|"
    r"secret_key|secret_access_key|private_key|session_token|access_token|auth_token|token)$"
)


@functools.lru_cache(maxsize=4096)  # the same few metadata keys, once per sample: keep the writer fast
def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(str(name).lower().replace("-", "_")))


def strip_secrets(obj: Any) -> Any:
    """A copy of `obj` without credential-named keys, and with user:password@ removed from URLs."""
    kind = type(obj)
    if kind is dict or isinstance(obj, dict):
        # Plain scalars are returned as they are without a call: this runs once per written sample.
        return {
            k: (v if type(v) in _SCALARS else strip_secrets(v))
            for k, v in obj.items()
            if not is_secret_key(k if type(k) is str else str(k))
        }
    if kind in (list, tuple) or isinstance(obj, (list, tuple)):
        return [v if type(v) in _SCALARS else strip_secrets(v) for v in obj]
    if isinstance(obj, str) and "@" in obj and "://" in obj:
        return redact_url(obj)
    return obj


_SCALARS = frozenset({int, float, bool, type(None)})  # str is not here: a URL may carry user:password@


# A user:password@host fragment without its scheme, as a message quotes a URL's parts ('KEY:SECRET@bucket').
_USERINFO_FRAGMENT = re.compile(r"(?<![\w/.:@%+~-])[\w.~%+-]+:[^\s'\"/@]+@(?=[\w.-])")


def redact_message(text: str) -> str:
    """`text` as a user may see it: no secret this process holds in its environment, no user:password@ of
    a URL, nor of a URL's quoted part. Every message the CLI prints passes through here. The access key id
    is not a secret and stays: it may be a word of the message too (MinIO's user `dppp`)."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return _USERINFO_FRAGMENT.sub("", redact_url(text))
