"""A minimal stand-in for the Hub's *upload* API (olah serves downloads only): enough of
`create_repo`, `preupload` and `commit` for `HfApi.upload_folder` to run for real over HTTP.
Every file is answered as a regular (non-LFS) upload, so its bytes arrive base64-encoded in the
commit payload; each commit's files are written under `<root>/<repo_id>/`.

    python tests/upload_server.py ROOT PORT
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    root: Path

    def _reply(self, payload, status=200):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def log_message(self, *args):
        pass

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self._body()
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            return self._reply({"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id, "id": repo_id})
        if path == "/api/validate-yaml":  # the model card's metadata; accepted as is
            return self._reply({"errors": [], "warnings": []})
        parts = path.split("/")  # /api/models/<org>/<name>/<verb>/<revision>
        if len(parts) >= 7 and parts[1:3] == ["api", "models"]:
            repo_id, verb = f"{parts[3]}/{parts[4]}", parts[5]
            if verb == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if verb == "commit":
                out = self.root / repo_id
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        (out.parent / (out.name + ".commit.json")).parent.mkdir(parents=True, exist_ok=True)
                        (out.parent / (out.name + ".commit.json")).write_text(json.dumps(item["value"]))
                    elif item["key"] == "file":
                        target = out / item["value"]["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(item["value"]["content"]))
                    else:
                        return self._reply({"error": f"unsupported commit operation {item['key']}"}, 400)
                return self._reply(
                    {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/0", "commitOid": "0" * 40}
                )
        self._reply({"error": f"not implemented: POST {path}"}, 404)

    def do_GET(self):
        self._reply({"error": f"not implemented: GET {self.path}"}, 404)


if __name__ == "__main__":
    Handler.root = Path(sys.argv[1])
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
