"""Signatures computed by botocore for requests the interceptor's SigV4 tests re-sign.

Run with any botocore (1.43 was used): python3 make_vectors.py > vectors.txt
Each block: the request as sent (method, URL, headers, body on one line) and the Authorization header
botocore's SigV4Auth (or S3SigV4Auth for S3) computes for it with fixed credentials and time.
The Rust tests re-sign the same request through `resign()` and must produce the same header.
"""
import datetime
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

CREDS = Credentials("ASIASESSIONKEYEXAMPLE", "sessionSecret/Example+Key", "SESSION/TOKEN+example==")
NOW = datetime.datetime(2026, 12, 4, 10, 15, 0)

CASES = [
    # name, auth class, service, region, method, url, headers, body
    ("s3-key-encoded-once", botocore.auth.S3SigV4Auth, "s3", "us-east-1", "PUT",
     "https://s3.us-east-1.amazonaws.com/b/a%20b%2Bc~d%20%C3%A9.txt",
     {"Content-Type": "text/plain", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
      "Content-Length": "5"}, b"hello"),
    ("s3-query-canonical", botocore.auth.S3SigV4Auth, "s3", "us-west-2", "GET",
     "https://b.s3.us-west-2.amazonaws.com/?prefix=x%2A&Marker=a%2Fb&list-type=2&acl=",
     {"X-Amz-Content-SHA256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}, b""),
    ("s3-query-repeated", botocore.auth.S3SigV4Auth, "s3", "us-west-2", "GET",
     "https://b.s3.us-west-2.amazonaws.com/?b=1&a=2&a=1&prefix=with%20space",
     {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, b""),
    ("s3-host-with-port", botocore.auth.S3SigV4Auth, "s3", "us-east-1", "GET",
     "https://s3.us-east-1.amazonaws.com:443/b?list-type=2",
     {"Host": "s3.us-east-1.amazonaws.com:443", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, b""),
    ("lambda-arn-double-encoded", botocore.auth.SigV4Auth, "lambda", "us-west-2", "POST",
     "https://lambda.us-west-2.amazonaws.com/2015-03-31/functions/"
     "arn%3Aaws%3Alambda%3Aus-west-2%3A123456789012%3Afunction%3Amy-fn%3Alive/invocations",
     {"Content-Type": "application/json", "Content-Length": "2"}, b"{}"),
    ("ec2-query-form", botocore.auth.SigV4Auth, "ec2", "us-east-1", "POST",
     "https://ec2.us-east-1.amazonaws.com/",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
      "Content-Length": "60"},
     b"Action=DescribeInstances&Version=2016-11-15&MaxResults=5&x=y"),
]

with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW):
    for name, cls, service, region, method, url, headers, body in CASES:
        req = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        if headers.get("X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD":
            # As for a streamed upload: S3SigV4Auth then signs UNSIGNED-PAYLOAD.
            req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        cls(CREDS, service, region).add_auth(req)
        print(f"== {name}")
        print(f"{method} {url}")
        # The headers as sent; the agent's own date, token and signature are placeholders.
        for k, v in req.headers.items():
            if k.lower() not in ("authorization", "x-amz-date", "x-amz-security-token"):
                print(f"{k}: {v}")
        print(f"-- body: {body.decode()}")
        print(f"-- authorization: {req.headers['Authorization']}")
