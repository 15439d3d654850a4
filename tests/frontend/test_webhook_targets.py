"""Which webhook URLs the server will call: the operator's hosts only, public addresses unless named."""

from __future__ import annotations

import asyncio

import pytest

from frontend.webhook_targets import MAX_URL_LENGTH, TargetRefused, WebhookTargets

TARGETS = WebhookTargets(("127.0.0.1", "hooks.internal", "*.example.com"))
ANY_PUBLIC_HOST = WebhookTargets(("*",))


def refusal(targets: WebhookTargets, url: str) -> str:
    with pytest.raises(TargetRefused) as refused:
        asyncio.run(targets.check(url))
    return str(refused.value)


def test_a_host_the_operator_names_may_use_http_and_a_loopback_address() -> None:
    target = asyncio.run(TARGETS.check("http://127.0.0.1:8123/hook?job=1"))
    assert (target.scheme, target.host, target.port, target.path) == ("http", "127.0.0.1", 8123, "/hook?job=1")
    assert target.host_header == "127.0.0.1:8123"
    assert TARGETS.parse("https://hooks.internal/").host_header == "hooks.internal"


def test_a_host_a_pattern_allows_must_use_https() -> None:
    assert TARGETS.parse("https://a.b.example.com/hook").named is False
    assert "must use https" in refusal(TARGETS, "http://hooks.example.com/hook")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",  # `*.example.com` allows subdomains only
        "https://evilexample.com/",
        "https://example.com.evil.net/",
        "http://127.0.0.2:8123/",
        "https://[::1]/",
    ],
)
def test_a_host_off_the_list_is_refused(url: str) -> None:
    assert "not among this server's allowed webhook hosts" in refusal(TARGETS, url)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://127.0.0.1/", "loopback"),
        ("https://10.1.2.3/", "private"),
        ("https://192.168.0.10/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),  # a cloud's metadata service
        ("https://224.0.0.1/", "multicast"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[64:ff9b::a00:1]/", "private"),  # NAT64 to 10.0.0.1
        ("https://[2002:a00:1::]/", "private"),  # 6to4 from 10.0.0.1
        ("https://[fd00::1]/", "private"),
        ("https://100.64.0.1/", "non-public"),  # carrier-grade NAT
        ("https://localhost/", "loopback"),  # a name resolving to one
    ],
)
def test_an_address_that_is_not_public_is_refused_unless_named(url: str, kind: str) -> None:
    assert f"a {kind} address" in refusal(ANY_PUBLIC_HOST, url)


def test_a_public_address_passes_a_pattern() -> None:
    assert asyncio.run(ANY_PUBLIC_HOST.check("https://93.184.215.14/hook")).named is False


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.com/" + "a" * MAX_URL_LENGTH, "longer than"),
        ("ftp://hooks.example.com/", "https:// URL"),
        ("https:///path", "https:// URL"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/#part", "fragment"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/a b", "without spaces"),
        ("https://bücher.example.com/", "punycode"),
    ],
)
def test_a_malformed_url_is_refused(url: str, reason: str) -> None:
    assert reason in refusal(TARGETS, url)


def test_webhooks_are_refused_when_the_operator_allows_no_host() -> None:
    assert "not enabled on this server" in refusal(WebhookTargets(()), "https://hooks.example.com/")


def test_a_pattern_that_would_match_lookalike_domains_is_refused() -> None:
    with pytest.raises(ValueError, match="neither"):
        WebhookTargets(("*example.com",))
