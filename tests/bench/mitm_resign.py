"""mitmproxy add-on of the benchmarks: the re-signing proxy a user would assemble instead.

It does what the gateway does to each call, minus policy and records: drop the agent's
placeholder SigV4 and sign the request again with botocore and fixed session credentials
(service and region taken from the agent's credential scope). Loaded by bench.py:

    mitmdump --mode reverse:https://UPSTREAM -s tests/bench/mitm_resign.py ...
"""

from __future__ import annotations

import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mitmproxy import http

#: Stand-in STS session credentials (the upstream only refuses the agent's placeholders).
CREDENTIALS = Credentials("ASIABENCHMITMPROXY00", "bench-secret-key", "bench-session-token")
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
#: Headers of the agent's signature that must not survive into the new one.
SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


def request(flow: http.HTTPFlow) -> None:
    scope = SCOPE.search(flow.request.headers.get("Authorization", ""))
    if scope is None:
        flow.response = http.Response.make(403, b"no SigV4 credential scope")
        return
    region, service = scope.groups()
    host = flow.request.host_header or flow.request.pretty_host
    headers = {name: value for name, value in flow.request.headers.items()
               if name.lower() not in {h.lower() for h in SIGNATURE_HEADERS}}
    signed = AWSRequest(method=flow.request.method, url=f"https://{host}{flow.request.path}",
                        data=flow.request.raw_content or b"", headers=headers)
    SigV4Auth(CREDENTIALS, service, region).add_auth(signed)
    for name in SIGNATURE_HEADERS:
        if name in signed.headers:
            flow.request.headers[name] = signed.headers[name]
