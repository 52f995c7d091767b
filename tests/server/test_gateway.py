"""The gateway makes its plugins (:class:`nfrx.server.gateway.Gateway`): one each, kept in the
list's order, and a plugin that looks up another while it is made gets it, made first if it comes
later in the list."""

from __future__ import annotations

import pytest

from nfrx.config.model import ServerConfig
from nfrx.server.gateway import Gateway
from nfrx.server.plugin import Plugin


class Early(Plugin):
    name = "early"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.late = gateway.plugin(Late)


class Late(Plugin):
    name = "late"


class Needy(Plugin):
    name = "needy"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        gateway.plugin(Cyclic)


class Cyclic(Plugin):
    name = "cyclic"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        gateway.plugin(Needy)


def test_a_plugin_may_look_up_one_listed_after_it() -> None:
    gateway = Gateway(ServerConfig(), (Early, Late))
    early, late = gateway.plugins
    assert [type(early), type(late)] == [Early, Late]
    assert isinstance(early, Early)
    assert early.late is late  # made once, for the lookup
    assert gateway.plugin(Late) is late


def test_a_plugin_the_gateway_lacks_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="this server has no Late"):
        Gateway(ServerConfig(), (Early,))


def test_plugins_that_look_each_other_up_are_refused() -> None:
    with pytest.raises(RuntimeError, match="look each other up"):
        Gateway(ServerConfig(), (Needy, Cyclic))
