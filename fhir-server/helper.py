"""Helpers for scripts/fhir-server, run by the sekmet venv's Python (see scripts/fhir-server).

They use only what sekmet-fhir itself installs (PyYAML, PyJWT, httpx, sekmet), never
cohort-match's own environment:

    helper.py render SRC DEST --port N --run-dir DIR   the config that actually runs
    helper.py token CONFIG KEY_PEM --scope S            an access token for the test client
    helper.py outcome FILE                              a server error body as readable lines
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, get_args, get_origin

import httpx
import jwt
import yaml
from pydantic import BaseModel, ValidationError

LOOPBACK = "127.0.0.1"


class _IncludeLoader(yaml.SafeLoader):
    """SafeLoader plus `!include FILE` (JSON or YAML, relative to the including file)."""


def _include(loader: _IncludeLoader, node: yaml.Node) -> Any:
    path = Path(loader.name).parent / str(loader.construct_scalar(node))  # type: ignore[arg-type]
    return yaml.safe_load(path.read_text())


_IncludeLoader.add_constructor("!include", _include)


def _unknown_keys(model: type[BaseModel], data: Any, where: str) -> list[str]:
    """Keys sekmet would silently ignore (its models use pydantic's default extra="ignore")."""
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        ann = field.annotation
        inner = [
            a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if inner:
            if get_origin(ann) is list and isinstance(value, list):
                for i, item in enumerate(value):
                    found += _unknown_keys(inner[0], item, f"{where}{key}[{i}].")
            elif get_origin(ann) is dict and isinstance(value, dict):
                for k, item in value.items():
                    found += _unknown_keys(inner[0], item, f"{where}{key}.{k}.")
            else:
                found += _unknown_keys(inner[0], value, f"{where}{key}.")
    return found


def render(src: Path, dest: Path, port: int, run_dir: Path) -> None:
    """Write the config sekmet runs with: loopback, this port, storage under run_dir."""
    from sekmet.config import Settings

    with src.open() as f:
        loader = _IncludeLoader(f)
        try:
            data = loader.get_single_data() or {}
        finally:
            loader.dispose()
    if data.get("host", LOOPBACK) != LOOPBACK:
        sys.exit(f"{src}: host must be {LOOPBACK} (it is {data['host']!r})")
    if data.get("peers") or data.get("public_url") or data.get("tls_certfile"):
        # peers make sekmet call out to other servers; public_url would move its links
        sys.exit(f"{src}: peers, public_url and TLS are not allowed in the test server config")
    data.update(
        host=LOOPBACK,
        port=port,
        base_url=f"http://{LOOPBACK}:{port}/fhir",
        data_dir=str(run_dir / "data"),
        db_path=str(run_dir / "data" / "sekmet.db"),
        own_private_key_path=str(run_dir / "data" / "sekmet_private.pem"),
    )
    unknown = _unknown_keys(Settings, data, "")
    if unknown:
        sys.exit(
            f"{src}: keys sekmet-fhir does not know (it would ignore them): {', '.join(unknown)}"
        )
    try:  # fail here, with pydantic's message, rather than in the server's log
        Settings.model_validate(data)
    except ValidationError as exc:
        sys.exit(f"{src}: not a valid sekmet-fhir config:\n{exc}")
    dest.write_text(
        f"# Rendered by scripts/fhir-server from {src}; do not edit.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )


def token(config: Path, key_pem: Path, scope: str) -> str:
    """An access token for the config's first SMART client (client_credentials, private_key_jwt)."""
    settings = yaml.safe_load(config.read_text())
    client = settings["server_auth"]["smart_clients"][0]
    jwk = client["jwks"]["keys"][0]
    root = settings["base_url"].removesuffix("/fhir")
    smart = httpx.get(f"{settings['base_url']}/.well-known/smart-configuration", timeout=10).json()
    token_url = smart["token_endpoint"]
    if not token_url.startswith(root):
        sys.exit(f"token endpoint {token_url} is not on the local server {root}")
    now = int(time.time())
    claims = {
        "iss": client["client_id"],
        "sub": client["client_id"],
        "aud": token_url,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode(
        claims, key_pem.read_bytes(), algorithm=jwk["alg"], headers={"kid": jwk["kid"]}
    )
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=10,
    )
    if response.status_code != 200:
        sys.exit(f"token request refused ({response.status_code}): {response.text}")
    return str(response.json()["access_token"])


def outcome(path: Path) -> str:
    """The issues of an OperationOutcome (or the start of whatever else the server sent)."""
    raw = path.read_text(errors="replace")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return raw[:2000]
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return raw[:2000]
    lines = []
    for issue in body.get("issue", []):
        where = f" [{', '.join(issue['expression'])}]" if issue.get("expression") else ""
        lines.append(
            f"{issue.get('severity')} {issue.get('code')}: {issue.get('diagnostics')}{where}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="helper.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render")
    p.add_argument("src", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p = sub.add_parser("token")
    p.add_argument("config", type=Path)
    p.add_argument("key", type=Path)
    p.add_argument("--scope", default="system/*.rs")
    p = sub.add_parser("outcome")
    p.add_argument("file", type=Path)
    args = parser.parse_args()
    if args.cmd == "render":
        render(args.src, args.dest, args.port, args.run_dir.resolve())
    elif args.cmd == "token":
        sys.stdout.write(token(args.config, args.key, args.scope) + "\n")
    else:
        sys.stdout.write(outcome(args.file) + "\n")


if __name__ == "__main__":
    main()
