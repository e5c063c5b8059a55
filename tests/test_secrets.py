"""Secrets: structural masking of URLs and headers, the free-text tiers, the process-wide registry, the
log scrubber and its installation, and the CLI's error line."""

from __future__ import annotations

import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from mlflow_nemo_judge import cli, logsafe
from mlflow_nemo_judge.config import secrets
from mlflow_nemo_judge.config.secrets import MASK, collect, masked_paths, redact, redact_text, redact_url
from mlflow_nemo_judge.errors import EndpointError


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    secrets.clear_registry()
    yield
    secrets.clear_registry()


# ---------------------------------------------------------------------------------- structural


def test_every_query_value_and_the_userinfo_are_masked_whatever_they_are_called():
    url = "https://svc:pa%2Fss@gw.example:8443/v1/chat/completions?subscription-key=S1&x-token=T2&route=r&api-version=2024-02-01&empty=&bare#sig=F3"
    assert redact_url(url) == (
        f"https://{MASK}:{MASK}@gw.example:8443/v1/chat/completions"
        f"?subscription-key={MASK}&x-token={MASK}&route={MASK}&api-version={MASK}&empty=&{MASK}#sig={MASK}"
    )
    # Textual, so what urlsplit rejects or a missing scheme still loses its credentials.
    assert redact_url("http://u:p@h:99999/v1?k=v") == f"http://{MASK}:{MASK}@h:99999/v1?k={MASK}"
    assert redact_url("u:p@h/v1") == f"{MASK}:{MASK}@h/v1"
    assert redact_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert redact_url("http://h/a@b/c") == "http://h/a@b/c"  # an '@' in the path is not userinfo


def test_redact_masks_headers_and_urls_in_dumps_but_not_urls_inside_prose():
    dump = {
        "url": "http://user:secretpw1@h/v1?q=abc123xyz",
        "headers": {"X-Org": "acme", "x-gateway-key": "gw-12345678"},
        "prompt": "See http://docs.example/?page=2 for details",
    }
    red = redact(dump)
    assert red["url"] == f"http://{MASK}:{MASK}@h/v1?q={MASK}"
    assert red["headers"] == {"X-Org": MASK, "x-gateway-key": MASK}
    assert red["prompt"] == dump["prompt"]  # a template is text, not an endpoint
    assert masked_paths(red) == ["url", "headers.X-Org", "headers.x-gateway-key"]


# ---------------------------------------------------------------------------------- free text


def test_collect_finds_every_form_and_what_it_becomes_on_the_wire(monkeypatch):
    monkeypatch.setenv("NJ_SECRETS_T_KEY", "env-key-9f8e7d6c")
    dump = {
        "api_key_env": "NJ_SECRETS_T_KEY",
        "api_key": "sk-lit-0a1b2c3d",
        "url": "http://svcuser-77:pw%2Fplus+1@h/v1?x-token=tok-55aa66bb&route=Rt7Gw9Xy",
        "headers": {"Authorization": "Bearer brr-31415926", "X-Route": "Dep10yment7"},
    }
    found = set(collect(dump))
    assert {"env-key-9f8e7d6c", "sk-lit-0a1b2c3d", "tok-55aa66bb", "Rt7Gw9Xy", "Dep10yment7"} <= found
    assert {"svcuser-77", "pw/plus+1", "pw%2Fplus+1"} <= found  # the userinfo decoded and as written
    assert {"brr-31415926", "Bearer brr-31415926"} <= found  # a header's bare token too
    assert "c3ZjdXNlci03Nzpwdy9wbHVzKzE=" in found  # base64("svcuser-77:pw/plus+1"): Basic on the wire
    assert "pw%2Fplus%2B1" in found  # a fully URL-encoded echo
    assert secrets.registered() and set(secrets.registered()) >= found


def test_free_text_masking_keeps_ordinary_text_intact():
    dump = {
        "url": "http://alice@h/v1?api-version=2024-02-01&deployment=production&n=12345678&v=1.2.3",
        "headers": {"Accept": "application/json", "X-Org": "acme", "X-Api-Version": "2024-02-01"},
        "api_key": "k1",  # too short to hunt in text (still masked structurally)
    }
    assert collect(dump) == ["YWxpY2U6"]  # only the Basic form of alice's userinfo: no word of prose
    text = "On 2024-02-01 alice in production sent application/json to acme, k1, id 12345678, v1.2.3."
    assert redact_text(text, collect(dump)) == text
    assert MASK in redact(dump)["url"] and redact(dump)["api_key"] == MASK


def test_a_credential_named_value_is_masked_even_when_short():
    found = collect({"url": "http://h/v1?sig=ab12", "headers": {"x-api-key": "k9z8"}})
    assert set(found) == {"ab12", "k9z8"}
    assert redact_text("sig ab12 key k9z8", found) == f"sig {MASK} key {MASK}"


# ---------------------------------------------------------------------------------- scrubber


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "POST http://u:p@h/v1?api-key=abc HTTP/1.1",
            f"POST http://{MASK}:{MASK}@h/v1?api-key={MASK} HTTP/1.1",
        ),
        ("Authorization: Bearer sk-xyz12345", f"Authorization: {MASK}"),
        ("auth header Basic dXNlcjpwYXNz1==", f"auth header Basic {MASK}"),
        ("{'x-gateway-key': 'hdr-gw', 'host': 'h'}", f"{{'x-gateway-key': '{MASK}', 'host': 'h'}}"),
        ("[(b'host', b'h'), (b'x-api-key', b'k123')]", f"[(b'host', b'h'), (b'x-api-key', b'{MASK}')]"),
        ('{"api_key": "sk-aaaa", "model": "m"}', f'{{"api_key": "{MASK}", "model": "m"}}'),
        # Ordinary text is left alone: numbers under token-ish names, env var names, prose.
        ("max_tokens=200 prompt_tokens: 10 api_key_env=NJ_KEY", None),
        ("a basic summary; the monkey ate the token", None),
    ],
)
def test_scrub_masks_credentials_by_their_shape(line, expected):
    assert logsafe.scrub(line) == (line if expected is None else expected)


def test_scrub_masks_registered_values_anywhere():
    secrets.register(["opaque-Value-7781", "ab"])  # too short a value is ignored
    assert logsafe.scrub("provider said: opaque-Value-7781 ab") == f"provider said: {MASK} ab"


def test_filter_on_a_root_handler_redacts_child_loggers_args_and_tracebacks():
    secrets.register(["hdrgw-K8j6H4g2"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logsafe.RedactingFilter())
    root, child = logging.getLogger(), logging.getLogger("httpx.test_secrets")
    root.addHandler(handler)
    # Explicit levels: a CLI test earlier in the session may have set the "httpx" logger to WARNING.
    old_level, old_child_level = root.level, child.level
    root.setLevel(logging.DEBUG)
    child.setLevel(logging.DEBUG)
    try:
        child.debug(
            "HTTP Request: POST %s %r", "http://h/v1?subscription-key=S3cr3tQ", {"x-gw": "hdrgw-K8j6H4g2"}
        )
        try:
            raise RuntimeError("echo: hdrgw-K8j6H4g2 from http://u:pw@h/")
        except RuntimeError:
            child.exception("failed")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        child.setLevel(old_child_level)
    out = stream.getvalue()
    assert "S3cr3tQ" not in out and "hdrgw-K8j6H4g2" not in out and "u:pw@" not in out
    assert f"subscription-key={MASK}" in out and "RuntimeError: echo: ******" in out and "Traceback" in out


@pytest.fixture
def installed(monkeypatch) -> Iterator[None]:
    """logsafe.install() with every process-wide hook restored afterwards."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(logsafe, "_state", {"factory": False, "hooks": False})
    logsafe.install()
    yield
    logging.setLogRecordFactory(factory)


def test_install_covers_non_propagating_loggers_warnings_and_uncaught_tracebacks(installed, capsys):
    secrets.register(["nvapi-Zz91Yy82Xx73"])
    stream = io.StringIO()
    own = logging.getLogger("mlflow.test_secrets")  # like mlflow's: its own handler, no propagation
    own.propagate, own.level = False, logging.INFO
    own.addHandler(logging.StreamHandler(stream))
    try:
        own.info("tracking to %s", "http://admin:hunter22@mlflow.example/?token=nvapi-Zz91Yy82Xx73")
    finally:
        own.handlers.clear()
    assert stream.getvalue() == f"tracking to http://{MASK}:{MASK}@mlflow.example/?token={MASK}\n"
    text = warnings.formatwarning("key nvapi-Zz91Yy82Xx73 rejected", UserWarning, "f.py", 1)
    assert "nvapi-Zz91Yy82Xx73" not in text and MASK in text
    try:
        raise ValueError("bad http://u:pw@h/v1?api-key=nvapi-Zz91Yy82Xx73")
    except ValueError as exc:
        sys.excepthook(ValueError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "ValueError: bad http://******:******@h/v1?api-key=******" in err and "nvapi-Zz91" not in err


def test_the_cli_error_line_is_scrubbed(installed, monkeypatch, capsys):
    secrets.register(["hdrgw-echoed-42xy"])

    def fail(args):
        raise EndpointError("http://u:pw@h/v1?route=r", "HTTP 401: invalid header hdrgw-echoed-42xy", 401)

    monkeypatch.setitem(cli._COMMANDS, "validate", fail)
    assert cli.main(["validate", "config.yaml"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: http://{MASK}:{MASK}@h/v1?route={MASK}: HTTP 401: invalid header {MASK}"]


def test_fingerprint_masks_credentials_only():
    # The run identity's dump: credentials masked, routing values (a header, api-version) kept.
    dump = {
        "url": "https://u:pw-9f3@gw.test/v1?api-version=2024-02-01&api-key=k-77aa",
        "headers": {"X-Route": "blue", "X-Api-Key": "hk-5511"},
        "api_key": "sk-1234",
    }
    assert secrets.fingerprint(dump) == {
        "url": f"https://u:{MASK}@gw.test/v1?api-version=2024-02-01&api-key={MASK}",
        "headers": {"X-Route": "blue", "X-Api-Key": MASK},
        "api_key": MASK,
    }
