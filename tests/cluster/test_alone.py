"""Without REDIS_URL nothing of the instances' machinery runs or is even imported."""

from __future__ import annotations

import subprocess
import sys

from nfrx.cluster import for_gateway
from nfrx.cluster.local import LocalCluster
from nfrx.config.model import ServerConfig
from nfrx.server.gateway import Gateway


def test_a_server_alone_never_imports_the_redis_client() -> None:
    code = (
        "import sys\n"
        "from nfrx.config.model import ServerConfig\n"
        "from nfrx.server.runner import run_server\n"
        "from nfrx.server.app import create_app\n"
        "from nfrx.server.gateway import Gateway\n"
        "create_app(Gateway(ServerConfig()))\n"
        "assert 'coredis' not in sys.modules, 'coredis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_gateway_alone_has_the_local_hooks() -> None:
    gateway = Gateway(ServerConfig())
    assert type(gateway.cluster) is LocalCluster
    assert gateway.cluster.members() == ()
    assert gateway.cluster.fleet() is None
    assert type(for_gateway(gateway)) is LocalCluster
