"""The proxy setting: where it points, and credentials kept out of sight."""

from __future__ import annotations

import base64

from integration.security.egress_proxy import EgressProxy
from integration.settings import Settings


def test_credentials_are_decoded_for_the_proxy_and_left_out_of_display_and_repr() -> None:
    """``user:p%40ss`` becomes Basic credentials for ``user:p@ss``; what is shown has none."""
    proxy = EgressProxy.from_url("http://user:p%40ss-secret@Proxy.Example:3128")
    assert (proxy.host, proxy.port) == ("proxy.example", 3128)
    assert proxy.authorization == "Basic " + base64.b64encode(b"user:p@ss-secret").decode()
    assert proxy.display == "http://proxy.example:3128"
    assert "secret" not in repr(proxy)
    assert EgressProxy.from_url("http://[::1]").display == "http://[::1]:80"
    assert EgressProxy.from_url("http://proxy:8080/").authorization is None


def test_an_unset_or_empty_setting_means_no_proxy() -> None:
    """Without the setting, calls go straight to their targets."""
    assert EgressProxy.from_settings(Settings()) is None
    assert EgressProxy.from_settings(Settings(egress_proxy=" ")) is None
    assert EgressProxy.from_settings(Settings(egress_proxy="http://p:1")) == \
        EgressProxy("p", 1)
