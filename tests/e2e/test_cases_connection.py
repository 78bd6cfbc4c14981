"""shared/cases 12 and 13: IPv6 / v4-mapped agents, and trust (the CA every runtime finds, and a
leaf that names exactly the SNI). Case 11 (HTTP/2) is test_wire_connection.py; the eBPF side of
case 12 is interceptor/tests/redirect.rs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness
from harness import Agents, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

# -- case 12: IPv6 and v4-mapped --------------------------------------------------------------

IPV6_AGENT = r"""
import json, os, socket, ssl, sys
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

address = sys.argv[1]
creds = botocore.session.get_session().get_credentials().get_frozen_credentials()
body = "Action=GetCallerIdentity&Version=2011-06-15"
request = AWSRequest("POST", "https://sts.amazonaws.com/", data=body, headers={
    "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
SigV4Auth(creds, "sts", "us-east-1").add_auth(request)

raw = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
raw.settimeout(20)
raw.connect((address, 443))
peer = raw.getpeername()
context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
tls = context.wrap_socket(raw, server_hostname="sts.amazonaws.com")
head = "POST / HTTP/1.1\r\nHost: sts.amazonaws.com\r\nConnection: close\r\n" + "".join(
    f"{k}: {v}\r\n" for k, v in request.headers.items()) + f"Content-Length: {len(body)}\r\n\r\n"
tls.sendall(head.encode() + body.encode())
answer = b""
while piece := tls.recv(65536):
    answer += piece
print(json.dumps({"peer": list(peer[:2]), "after_tls_peer": list(tls.getpeername()[:2]),
                  "status": answer.split(b"\r\n")[0].decode(),
                  "body": answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:800]}))
"""


#: v4-mapped: the AWS address of the private hosts file as an AF_INET6 client writes it; and
#: native IPv6 loopback (the gateway's [::1] listener).
@pytest.mark.parametrize("address", ["::ffff:127.0.0.2", "::1"])
def test_case12_v4_mapped_ipv6_agent_is_served_and_sees_its_own_peer(
        agents: Agents, alice_token_file: Path, address: str):
    result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", IPV6_AGENT, address])

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["peer"] == [address, 443], out
    assert out["after_tls_peer"] == [address, 443], out
    assert out["status"] == "HTTP/1.1 200 OK", out
    assert "assumed-role/agent/agent-alice@" in out["body"], out


# -- case 13: trust ---------------------------------------------------------------------------

CURL = (
    "curl -sS -o /dev/null -w '%{http_code} %{ssl_verify_result}' "
    "--aws-sigv4 aws:amz:us-east-1:sts --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
    "-H 'Content-Type: application/x-www-form-urlencoded' "
    "-d 'Action=GetCallerIdentity&Version=2011-06-15' https://sts.amazonaws.com/"
)

S_CLIENT = (
    "openssl s_client -connect ec2.us-east-1.amazonaws.com:443 "
    "-servername ec2.us-east-1.amazonaws.com -CAfile \"$SSL_CERT_FILE\" -verify_return_error "
    "</dev/null 2>/dev/null > /tmp/s_client.$$ ; "
    "grep -E '^ *Verify return code' /tmp/s_client.$$ ; "
    "openssl x509 -in /tmp/s_client.$$ -noout -ext subjectAltName ; rm -f /tmp/s_client.$$"
)

PYTHON_DEFAULT_CONTEXT = r"""
import json, ssl, urllib.error, urllib.request
url = "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
try:
    # The default context: OpenSSL's default paths, which SSL_CERT_FILE names.
    with urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=20) as got:
        print(json.dumps({"verified": True, "status": got.status}))
except urllib.error.HTTPError as error:
    print(json.dumps({"verified": True, "status": error.code}))
except (ssl.SSLError, urllib.error.URLError) as error:
    print(json.dumps({"verified": False, "error": str(error)}))
"""


def test_case13_the_gateway_ca_is_trusted_by_every_common_runtime(
        agents: Agents, alice_token_file: Path):
    outcomes = agents.batch(alice_token_file, [
        ["bash", "-c", CURL],
        ["bash", "-c", S_CLIENT],
        ["python3", "-c", PYTHON_DEFAULT_CONTEXT],
        ["aws", "sts", "get-caller-identity"],
    ])
    curl, s_client, python, cli = outcomes

    # curl (CURL_CA_BUNDLE) verified the leaf, signed the call itself, and was re-signed.
    assert curl["rc"] == 0 and curl["stdout"] == "200 0", curl
    # openssl: the chain verifies, and the leaf names exactly the SNI.
    assert "Verify return code: 0 (ok)" in s_client["stdout"], s_client
    san = s_client["stdout"].split("Subject Alternative Name:")[-1].split()
    assert san == ["DNS:ec2.us-east-1.amazonaws.com"], s_client
    # Python's default context (SSL_CERT_FILE), and the CLI (AWS_CA_BUNDLE).
    assert json.loads(python["stdout"])["verified"] is True, python
    assert cli["rc"] == 0 and "agent-alice@" in cli["stdout"], cli
