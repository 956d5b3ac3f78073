"""A local S3-compatible server for the tests: moto's server mode in a subprocess, on a free 127.0.0.1 port.

``ENV`` is what a client of it needs: dummy credentials through boto3's usual chain, no instance metadata lookups
(their address is not this machine's) and no shared config or credentials files of the machine's user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import IO, Any

import boto3
import httpx

from tests.waiting import until

HOST = "127.0.0.1"
REGION = "us-east-1"
ENV = {
    "AWS_ACCESS_KEY_ID": "cellbox-test",
    "AWS_SECRET_ACCESS_KEY": "cellbox-test-secret",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> MotoServer:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - a file, never a full pipe; closed in stop()
        self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=self._stderr, env={**os.environ, **ENV})
        until(self._answers, "moto's server to answer")
        return self

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            assert self._stderr is not None
            self._stderr.seek(0)
            raise RuntimeError(f"moto's server exited: {self._stderr.read().decode(errors='replace')[-3000:]}")
        try:
            return httpx.get(self.url + "/moto-api/", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(60)
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def client(self) -> Any:
        """A boto3 client of its own, to look at the bucket behind the code under test's back."""
        session = boto3.session.Session(aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])
        return session.client("s3", endpoint_url=self.url, region_name=REGION)

    def new_bucket(self) -> str:
        name = f"cellbox-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
