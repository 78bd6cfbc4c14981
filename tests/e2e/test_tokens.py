"""Tokens the daemon must refuse: `interceptor run` fails readably and nothing reaches moto."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import harness
from harness import Agents, Idp, Moto, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def expired_token(short_lived_token: str) -> str:
    """The short-lived client's token, once it is past exp plus the daemon's leeway."""
    _, claims = harness.jwt_parts(short_lived_token)
    # Not synchronisation: waiting out a wall-clock expiry. The token was fetched at session
    # start, so by now this is usually already over.
    remaining = claims["exp"] + harness.JWT_EXP_LEEWAY_SECONDS + 1 - time.time()
    if remaining > 0:
        time.sleep(remaining)
    return short_lived_token


@pytest.fixture
def refused_tokens(idp: Idp, alice_token: str, short_lived_token: str):
    return {
        "expired": lambda: expired_token(short_lived_token),
        "forged": lambda: harness.forge(alice_token),
        "wrong_audience": lambda: idp.token(harness.ALICE, harness.WRONG_AUDIENCE_RESOURCE),
    }


@pytest.mark.parametrize("case", ["forged", "wrong_audience", "expired"])
def test_refused_token_fails_run_readably_and_reaches_nothing(
        case: str, refused_tokens, agents: Agents, moto: Moto, tmp_path: Path):
    token = refused_tokens[case]()
    token_file = agents.token_file(f"refused-{case}", token)
    marker = tmp_path / "agent-ran"
    keys_before, tokens_before = len(moto.keys()), len(moto.web_identity_tokens())

    result = agents.run(token_file, [str(harness.PYTHON), "-c",
                                     f"open({str(marker)!r}, 'w').close()"])

    output = result.stdout + result.stderr
    assert result.returncode != 0, describe(result)
    assert harness.TOKEN_REFUSAL_PATTERNS[case].search(output), describe(result)
    assert "Traceback" not in output and "panicked" not in output, describe(result)
    assert not marker.exists(), "the agent command must not run with a refused token"
    assert len(moto.keys()) == keys_before
    assert len(moto.web_identity_tokens()) == tokens_before
    assert token not in {t["token"] for t in moto.web_identity_tokens()}
