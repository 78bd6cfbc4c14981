"""moto server standing in for AWS in the end-to-end tests, with SigV4 signature checks on.

Usage:
    python tests/peers/moto_server.py [--port N] --key-log FILE --token-log FILE

Listens on 127.0.0.1 (port 0 = the kernel picks) and prints one JSON line on stdout once it
accepts connections: {"port": N, "url": "http://127.0.0.1:N", "account": ..., "role_arn": ...}.

What moto checks here, and what it does not (be honest about the stand-in):

* Signature checks are on: every request is authenticated as if moto's
  INITIAL_NO_AUTH_ACTION_COUNT were 0 (moto/core/authorization.py). moto recomputes the SigV4
  signature of the canonical request (method, path, query, signed headers, X-Amz-Date) with the
  secret of the access key id named in the Authorization header, looks the key up among IAM users
  (AKIA...) and STS-assumed roles (ASIA..., X-Amz-Security-Token must match), and then evaluates
  the caller's IAM policies (moto/iam/access_control.py).
* moto does NOT check: the payload hash against the body (x-amz-content-sha256 is taken as
  sent), aws-chunked chunk signatures, or clock skew / expiry of X-Amz-Date or of STS
  credentials. The project's own Rust tests cover those (SigV4 test-suite vectors).

Gaps in moto handled here, each on purpose and each visible to the tests:

(a) With checks on, moto answers 500 to ANY unsigned call (it indexes the missing Authorization
    header). Real AWS serves sts:AssumeRoleWithWebIdentity unsigned, because the web identity
    token is the credential. Exactly that action skips the signature check here. Every other
    unsigned call keeps moto's behaviour (an error) and is logged with "signed": false.
(b) moto never reads or validates the WebIdentityToken. Every token it receives is appended to
    the token log (JSON lines: time, role_arn, role_session_name, source_identity, token), so
    the tests can assert that the gateway presented the agent's real IdP token.
(c) Every other request is appended to the key log (JSON lines: time, service, action, signed,
    access_key_id, security_token (bool), authenticated (bool), error), so the tests can assert
    that moto only ever saw STS-issued keys (ASIA...), never the agent's placeholder keys.
(d) The role the daemon assumes (arn:aws:iam::123456789012:role/agent; moto's default account)
    is created at start with an inline policy allowing "*", so moto's authorization passes for
    calls signed with that role's STS credentials. Its trust policy also lets the role assume
    itself with sts:SetSourceIdentity and sts:TagSession, as the README asks of a real role for
    the daemon's chained, tagged AssumeRole (aws.tag_sessions).
(e) moto does check the trust policy for sts:AssumeRole, but compares its AWS principal verbatim
    with the caller's assumed-role session ARN; AWS matches a role ARN in the trust policy to
    every session of that role. When moto's own check refuses a caller that is a role session,
    the trust policy is evaluated once more with the session's role ARN as the principal, so
    role chaining behaves as on AWS. moto checks only the sts:AssumeRole action there, not
    sts:SetSourceIdentity or sts:TagSession, and ignores SourceIdentity and Tags.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from moto import settings
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import (
    AssumedRoleAccessKey,
    IAMPolicy,
    IAMRequestBase,
    PermissionResult,
)
from moto.iam.utils import format_incoming_conditional_values
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ROLE_NAME = "agent"
ROLE_ARN = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{ROLE_NAME}"
WEB_IDENTITY_ACTION = "AssumeRoleWithWebIdentity"

# Who may assume the role: any web identity (moto does not evaluate it for this action, see (a)),
# and the role itself, for the daemon's chained, tagged AssumeRole (see (d) and (e)).
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Federated": "*"},
            "Action": "sts:AssumeRoleWithWebIdentity",
        },
        {
            "Effect": "Allow",
            "Principal": {"AWS": ROLE_ARN},
            "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
        },
    ],
}
ALLOW_ALL_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}

CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")


class JsonLines:
    """An append-only JSON-lines file shared by moto's request threads."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"time": time.time(), **entry}, sort_keys=True)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def header(handler: Any, name: str) -> str | None:
    """A request header, whatever its case (moto's header objects vary by service)."""
    headers = handler.headers
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def action_of(handler: Any) -> str | None:
    try:
        action = handler._get_action()
    except Exception:  # moto cannot name every S3 action before routing; log what we can
        return None
    if isinstance(action, list):
        return action[0] if action else None
    return action


def param(handler: Any, name: str) -> str | None:
    try:
        value = handler._get_param(name)
    except Exception:  # a parameter moto cannot parse is logged as absent
        value = None
    if value is None:
        value = handler.querystring.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def install_recording_auth(key_log: JsonLines, token_log: JsonLines) -> None:
    """Wrap moto's one authentication entry point to implement (a), (b) and (c)."""
    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        service = getattr(self, "service_name", None)
        action = action_of(self)
        if service == "sts" and action == WEB_IDENTITY_ACTION:
            token_log.append(
                {
                    "role_arn": param(self, "RoleArn"),
                    "role_session_name": param(self, "RoleSessionName"),
                    "source_identity": param(self, "SourceIdentity"),
                    "signed": header(self, "Authorization") is not None,
                    "token": param(self, "WebIdentityToken"),
                }
            )
            return

        authorization = header(self, "Authorization")
        match = CREDENTIAL_RE.search(authorization or "")
        entry: dict[str, Any] = {
            "service": service,
            "action": action,
            "signed": authorization is not None,
            "access_key_id": match.group(1) if match else None,
            "security_token": header(self, "X-Amz-Security-Token") is not None,
            "authenticated": False,
            "error": None,
        }
        try:
            original(self, iam_request_cls, resource)
            entry["authenticated"] = True
        except BaseException as error:
            entry["error"] = f"{type(error).__name__}: {error}"[:300]
            raise
        finally:
            key_log.append(entry)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate  # type: ignore


def install_role_session_trust() -> None:
    """(e): a role ARN in a trust policy also trusts the sessions of that role, as on AWS."""
    original = IAMRequestBase._check_role_trust_relationship

    def check(self: Any, role_arn: str) -> bool:
        if original(self, role_arn):
            return True
        caller = self._access_key
        if not isinstance(caller, AssumedRoleAccessKey):
            return False
        caller_role_arn = self.backend.get_role(caller._owner_role_name).arn
        trust = IAMPolicy(self.backend.get_role_by_arn(role_arn).assume_role_policy_document)
        result = trust.is_action_permitted(
            self._action, role_arn, caller_role_arn, format_incoming_conditional_values(self._data)
        )
        return result == PermissionResult.PERMITTED

    IAMRequestBase._check_role_trust_relationship = check  # type: ignore


def bootstrap_role() -> None:
    """(d): the role the daemon assumes, allowed to do anything in moto's IAM model."""
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_role(
        role_name=ROLE_NAME,
        assume_role_policy_document=json.dumps(TRUST_POLICY),
        path="/",
        permissions_boundary=None,
        description="role assumed by the interceptor daemon in the e2e tests",
        tags=[],
        max_session_duration="43200",
    )
    iam.put_role_policy(ROLE_NAME, "allow-all", json.dumps(ALLOW_ALL_POLICY))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key-log", type=Path, required=True)
    parser.add_argument("--token-log", type=Path, required=True)
    args = parser.parse_args()

    # Checks on from the first request: no free unauthenticated calls.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    install_recording_auth(JsonLines(args.key_log), JsonLines(args.token_log))
    install_role_session_trust()
    bootstrap_role()

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    host, port = server.server_address[:2]
    ready = {
        "port": port,
        "url": f"http://{host}:{port}",
        "account": DEFAULT_ACCOUNT_ID,
        "role_arn": ROLE_ARN,
    }
    print(json.dumps(ready), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
