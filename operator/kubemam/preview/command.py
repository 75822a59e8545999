"""`kubemam preview ma NAME`: gather the asset, serve its page on 127.0.0.1, print the URL, open a browser."""

from __future__ import annotations

import base64
import json
import os
import sys
import webbrowser
from collections.abc import Mapping
from typing import Any

from kubemam.kubeapi import KubeApi
from kubemam.preview.gather import gather
from kubemam.preview.player import PlayerScript
from kubemam.preview.server import PreviewServer

ENDPOINT_ENVS = ("AWS_ENDPOINT_URL", "KUBEMAM_S3_ENDPOINT")
SECRET_ENV = "KUBEMAM_S3_CREDENTIALS_SECRET"


def preview_client(endpoint: str | None, access_key: str | None = None, secret_key: str | None = None) -> Any:
    """A boto3 S3 client as storage.s3.make_client makes one, but signing with SigV4 (presigned URLs in the
    older query form are refused by newer AWS regions) and with short timeouts: a person is waiting."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                      read_timeout=30))


def s3_client(api: KubeApi, namespace: str, endpoint: str | None, secret: str | None,
              environ: Mapping[str, str] | None = None) -> Any:
    """S3 as the operator's step Jobs reach it: the endpoint from --s3-endpoint, AWS_ENDPOINT_URL or
    KUBEMAM_S3_ENDPOINT; credentials from the Secret --s3-secret (or KUBEMAM_S3_CREDENTIALS_SECRET) names in
    the asset's namespace, else boto3's own chain (AWS_* variables, ~/.aws)."""
    env = os.environ if environ is None else environ
    endpoint = endpoint or next((env[v] for v in ENDPOINT_ENVS if env.get(v)), None)
    secret = secret or env.get(SECRET_ENV) or None
    if not secret:
        return preview_client(endpoint)
    body = json.loads(api.core.read_namespaced_secret(secret, namespace, _preload_content=False,
                                                      _request_timeout=api.timeout).data)
    data = body.get("data") or {}
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k not in data]
    if missing:
        raise ValueError(f"the Secret {namespace}/{secret} has no {' or '.join(missing)}")
    return preview_client(endpoint, base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode(),
                       base64.b64decode(data["AWS_SECRET_ACCESS_KEY"]).decode())


def serve(api: KubeApi, s3: Any, namespace: str, name: str, port: int, player: PlayerScript,
          open_browser: bool, expires: int) -> int:
    server = PreviewServer(port, lambda: gather(api, s3, namespace, name), s3, player, expires)
    print(f"kubemam preview of mediaasset {namespace}/{name}: {server.url}", flush=True)
    print(f"  {player.describe()['label']}; Ctrl-C to stop", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        server.server_close()
    return 0
