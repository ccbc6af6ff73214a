"""A local stand-in for the Hugging Face Hub API, on 127.0.0.1 at a free port, recording every request.

It answers just what huggingface_hub 2.4 sends to push a model and deploy a Space (read from the client's
source): whoami-v2, repos/create, repo info, validate-yaml, preupload, commit (NDJSON), Space variables,
secrets, hardware and volumes, and bucket creation. Every file is declared "regular" at preupload, so the
client sends file contents base64-encoded inside the commit (the real Hub would route large files through
LFS/Xet storage, which this stand-in does not imitate).

    with HubStandin(user="alice", token="hf_FAKE...") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
        hub.repo("alice/tutor").files["README.md"]
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import yaml

REPO = r"([^/?]+/[^/?]+)"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class Recorded:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # commit summaries
    hardware: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    volumes: list[dict] = field(default_factory=list)


class HubStandin:
    def __init__(self, user: str = "alice", token: str = "hf_FAKEtoken"):
        self.user, self.token = user, token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.buckets: dict[str, dict] = {}
        self.requests: list[Recorded] = []
        self.failures: list[tuple[str, int | None]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "HubStandin":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """A repo that exists already, e.g. someone else's (its owner is the namespace)."""
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def fail_next(self, path_pattern: str, status: int | None = None) -> None:
        """The next request whose path matches fails once: with `status`, or (None) the connection is dropped."""
        self.failures.append((path_pattern, status))

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"


def handler_for(hub: HubStandin):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_PUT(self):
            self.handle_any("PUT")

        def handle_any(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with hub.lock:
                hub.requests.append(Recorded(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                failure = next((f for f in hub.failures if re.search(f[0], self.path)), None)
                if failure:
                    hub.failures.remove(failure)
                    if failure[1] is None:
                        self.close_connection = True  # no response at all: the client sees a network failure
                        return
                    return self.reply(failure[1], {"error": "Injected failure"})
                status, payload, headers = route(hub, method, urlsplit(self.path).path, self.headers, body)
            self.reply(status, payload, headers)

        def reply(self, status: int, payload, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def error(status: int, message: str, code: str | None = None):
    headers = {"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
    return status, {"error": message}, headers


def route(hub: HubStandin, method: str, path: str, headers, body: bytes):
    """(status, JSON payload, extra headers) for one request."""
    if headers.get("authorization") != f"Bearer {hub.token}":
        return error(401, "Invalid credentials in Authorization header")
    if method == "GET" and path == "/api/whoami-v2":
        return 200, {"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}}, {}
    if method == "POST" and path == "/api/validate-yaml":
        return validate_yaml(json.loads(body))
    if method == "POST" and path == "/api/repos/create":
        return create_repo(hub, json.loads(body))
    if m := re.fullmatch(rf"/api/(models|datasets|spaces)/{REPO}(?:/revision/[^/]+)?", path):
        return repo_info(hub, TYPES[m[1]], m[2])
    if m := re.fullmatch(rf"/api/(models|datasets|spaces)/{REPO}/(preupload|commit)/[^/]+", path):
        repo_type, repo_id, action = TYPES[m[1]], m[2], m[3]
        if (repo_type, repo_id) not in hub.repos:
            return error(404, "Repository not found", "RepoNotFound")
        if repo_id.split("/")[0] != hub.user:
            return error(403, f"You don't have the rights to write to {repo_id}")
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                   for f in files]}, {}
        return commit(hub, hub.repo(repo_id, repo_type), body)
    if m := re.fullmatch(rf"/api/spaces/{REPO}/(variables|secrets|hardware|volumes)", path):
        return space_setting(hub, m[1], m[2], json.loads(body))
    if m := re.fullmatch(r"/api/buckets/([^/]+)/([^/]+)", path):
        if m[1] != hub.user:
            return error(403, f"You don't have the rights to create a bucket under {m[1]}")
        bucket_id = f"{m[1]}/{m[2]}"
        if bucket_id in hub.buckets:
            return error(409, "Bucket already exists")
        hub.buckets[bucket_id] = json.loads(body)
        return 200, {"url": f"{hub.url}/buckets/{bucket_id}", "id": bucket_id}, {}
    return error(404, f"The stand-in does not know {method} {path}")


def validate_yaml(payload: dict):
    match = re.match(r"---\n(.*?)\n---\n", payload["content"], re.S)
    try:
        metadata = yaml.safe_load(match[1]) if match else {}
    except yaml.YAMLError as exc:
        return 400, {"errors": [{"message": f"Invalid YAML: {exc}"}]}, {}
    if not isinstance(metadata, dict):
        return 400, {"errors": [{"message": "The metadata must be a mapping"}]}, {}
    return 200, {"errors": [], "warnings": []}, {}


def create_repo(hub: HubStandin, payload: dict):
    repo_type = payload.get("type") or "model"
    namespace = payload.get("organization") or hub.user
    repo_id = f"{namespace}/{payload['name']}"
    url = hub.repo_url(repo_type, repo_id)
    if namespace != hub.user:
        return error(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
    if (repo_type, repo_id) in hub.repos:
        return 409, {"error": f"You already created this {repo_type} repo", "url": url}, {}
    repo = hub.add_repo(repo_id, repo_type, private=payload.get("visibility") == "private")
    repo.sdk = payload.get("sdk")
    repo.hardware = payload.get("hardware")
    return 200, {"url": url, "name": repo_id}, {}


def repo_info(hub: HubStandin, repo_type: str, repo_id: str):
    repo = hub.repos.get((repo_type, repo_id))
    if repo is None or (repo.private and repo_id.split("/")[0] != hub.user):
        return error(404, "Repository not found", "RepoNotFound")
    sha = hashlib.sha1(repr(sorted(repo.files.items())).encode()).hexdigest()
    return 200, {"id": repo_id, "private": repo.private, "sha": sha, "sdk": repo.sdk,
                 "siblings": [{"rfilename": name} for name in sorted(repo.files)]}, {}


def commit(hub: HubStandin, repo: Repo, body: bytes):
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    for line in lines:
        if line["key"] == "file":
            repo.files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        elif line["key"] in ("deletedFile", "deletedFolder"):
            prefix = line["value"]["path"].rstrip("/")
            repo.files = {k: v for k, v in repo.files.items() if k != prefix and not k.startswith(prefix + "/")}
        elif line["key"] != "header":
            return 400, {"error": f"The stand-in takes only inline files, not {line['key']}"}, {}
    repo.commits.append(lines[0]["value"]["summary"])
    oid = hashlib.sha1(f"{repo.repo_id}{len(repo.commits)}".encode()).hexdigest()
    commit_url = f"{hub.repo_url(repo.repo_type, repo.repo_id)}/commit/{oid}"
    return 200, {"success": True, "commitOid": oid, "commitUrl": commit_url}, {}


def space_setting(hub: HubStandin, repo_id: str, what: str, payload: dict):
    repo = hub.repos.get(("space", repo_id))
    if repo is None:
        return error(404, "Repository not found", "RepoNotFound")
    if repo_id.split("/")[0] != hub.user:
        return error(403, f"You don't have the rights to change {repo_id}")
    if what == "variables":
        repo.variables[payload["key"]] = payload["value"]
        return 200, {k: {"value": v} for k, v in repo.variables.items()}, {}
    if what == "secrets":
        repo.secrets[payload["key"]] = payload["value"]
        return 200, {}, {}
    if what == "volumes":
        repo.volumes = payload["volumes"]
        return 200, {}, {}
    repo.hardware = payload["flavor"]
    return 200, {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware}}, {}
