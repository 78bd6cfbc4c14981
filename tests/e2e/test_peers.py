"""The real peers alone, without the daemon: what the other tests rely on them to do."""

from __future__ import annotations

import base64
import time

import boto3
import botocore.exceptions
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import harness
from harness import Idp, Moto


@pytest.fixture
def own_moto(tmp_path):
    """A moto of this test's own, so its logs hold only this test's calls."""
    peer = Moto.start(tmp_path)
    yield peer
    peer.process.stop()


def moto_client(moto: Moto, service: str, **credentials):
    return boto3.client(service, endpoint_url=moto.url, region_name=harness.REGION,
                        **credentials)


def verify_rs256(token: str, jwks: dict) -> bool:
    header, _ = harness.jwt_parts(token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    number = lambda field: int.from_bytes(harness._b64url_decode(key[field]), "big")  # noqa: E731
    public = rsa.RSAPublicNumbers(number("e"), number("n")).public_key()
    signed, signature = token.rsplit(".", 1)
    try:
        public.verify(harness._b64url_decode(signature), signed.encode(), padding.PKCS1v15(),
                      hashes.SHA256())
        return True
    except Exception:
        return False


def test_idp_serves_discovery_and_a_public_jwks(idp: Idp):
    discovery = idp.get_json(f"{idp.issuer}/.well-known/openid-configuration")
    jwks = idp.get_json(discovery["jwks_uri"])

    assert discovery["issuer"] == idp.issuer
    assert discovery["token_endpoint"] == idp.token_endpoint
    assert [key["kty"] for key in jwks["keys"]] == ["RSA"]
    assert not any("d" in key for key in jwks["keys"]), "the JWKS must not leak private parts"


@pytest.mark.parametrize("client, groups", [(harness.ALICE, ["agents"]),
                                            (harness.ADMIN, ["admins", "agents"])])
def test_idp_token_is_a_signed_jwt_with_groups_and_audience(idp: Idp, client, groups):
    token = idp.token(client)
    header, claims = harness.jwt_parts(token)
    jwks = idp.get_json(idp.get_json(f"{idp.issuer}/.well-known/openid-configuration")["jwks_uri"])

    assert header["alg"] == "RS256"
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == harness.AUDIENCE
    assert claims["sub"] == client
    assert claims["groups"] == groups
    assert verify_rs256(token, jwks)
    assert not verify_rs256(harness.forge(token), jwks)


def test_idp_other_resource_gives_the_wrong_audience(idp: Idp):
    _, claims = harness.jwt_parts(idp.token(harness.ALICE, harness.WRONG_AUDIENCE_RESOURCE))

    assert claims["aud"] == "other-audience"


def test_idp_short_lived_client_tokens_expire_within_seconds(idp: Idp):
    _, claims = harness.jwt_parts(idp.token(harness.SHORT_LIVED))

    assert claims["exp"] - claims["iat"] == harness.SHORT_TTL_SECONDS
    assert claims["exp"] <= time.time() + harness.SHORT_TTL_SECONDS + 1


def test_idp_refuses_a_wrong_client_secret(idp: Idp):
    import urllib.error
    import urllib.request

    basic = base64.b64encode(f"{harness.ALICE}:wrong".encode()).decode()
    request = urllib.request.Request(idp.token_endpoint, data=b"grant_type=client_credentials",
                                     headers={"Authorization": f"Basic {basic}"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=idp.ssl_context(), timeout=10)

    assert refused.value.code == 401


def test_moto_refuses_unknown_keys_and_wrong_signatures(own_moto: Moto):
    placeholder = moto_client(own_moto, "sts", aws_access_key_id="AKIAE2EPEERTEST00000",
                              aws_secret_access_key="not-a-secret")
    with pytest.raises(botocore.exceptions.ClientError) as unknown:
        placeholder.get_caller_identity()

    creds = assume_role(own_moto, "token-for-peer-test")
    wrong_secret = moto_client(own_moto, "sts", aws_access_key_id=creds["AccessKeyId"],
                               aws_secret_access_key="x" * 40,
                               aws_session_token=creds["SessionToken"])
    with pytest.raises(botocore.exceptions.ClientError) as mismatch:
        wrong_secret.get_caller_identity()

    assert unknown.value.response["Error"]["Code"] == "InvalidClientTokenId"
    assert mismatch.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    refused = [entry["access_key_id"] for entry in own_moto.keys() if not entry["authenticated"]]
    assert refused == ["AKIAE2EPEERTEST00000", creds["AccessKeyId"]]


def assume_role(moto: Moto, token: str) -> dict:
    anonymous = boto3.client("sts", endpoint_url=moto.url, region_name=harness.REGION,
                             config=Config(signature_version=UNSIGNED))
    answer = anonymous.assume_role_with_web_identity(
        RoleArn=moto.role_arn, RoleSessionName="peer-test", WebIdentityToken=token,
        DurationSeconds=900)
    return answer["Credentials"]


def test_moto_serves_unsigned_web_identity_then_the_issued_keys(own_moto: Moto):
    creds = assume_role(own_moto, "header.claims.signature")
    signed = dict(aws_access_key_id=creds["AccessKeyId"],
                  aws_secret_access_key=creds["SecretAccessKey"],
                  aws_session_token=creds["SessionToken"])
    identity = moto_client(own_moto, "sts", **signed).get_caller_identity()
    moto_client(own_moto, "s3", **signed).create_bucket(Bucket="peer-test-bucket")

    assert creds["AccessKeyId"].startswith("ASIA")
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/agent/peer-test"
    assert [t["token"] for t in own_moto.web_identity_tokens()] == ["header.claims.signature"]
    assert [(k["access_key_id"], k["security_token"], k["authenticated"])
            for k in own_moto.keys()] == [(creds["AccessKeyId"], True, True)] * 2


def test_names_resolve_from_the_private_hosts_file_only():
    import socket

    assert socket.gethostbyname(f"sts.{harness.REGION}.amazonaws.com") == harness.AWS_ADDRESS
    assert socket.gethostbyname("e2e-cli-bucket.s3.amazonaws.com") == harness.AWS_ADDRESS
    with pytest.raises(socket.gaierror):
        socket.gethostbyname("example.com")
