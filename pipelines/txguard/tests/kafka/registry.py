#!/usr/bin/env python3
"""A schema registry for the tests: the subset of Confluent Schema Registry's documented REST
API that producers and txguard use, in memory, on a loopback port (no registry server installs
on these machines).

  POST /subjects/{subject}/versions   {"schema": "..."}  -> {"id": N}  (same schema, same id)
  GET  /schemas/ids/{id}                                  -> {"schema": "..."} | 404 40403
  GET  /subjects                                          -> ["subject", ...]

Prints `port N` on stdout once listening; runs until killed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

schemas = {}  # id -> schema text
subjects = {}  # subject -> [id]


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["schemas", "ids"] and len(parts) == 3 and parts[2].isdigit():
            sid = int(parts[2])
            if sid in schemas:
                return self.reply(200, {"schema": schemas[sid]})
            return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
        if parts == ["subjects"]:
            return self.reply(200, sorted(subjects))
        self.reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            text = body.get("schema")
            if not isinstance(text, str):
                return self.reply(422, {"error_code": 42201, "message": "Invalid schema"})
            for sid, s in schemas.items():
                if s == text:
                    break
            else:
                sid = len(schemas) + 1
                schemas[sid] = text
            subjects.setdefault(parts[1], [])
            if sid not in subjects[parts[1]]:
                subjects[parts[1]].append(sid)
            return self.reply(200, {"id": sid})
        self.reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()
