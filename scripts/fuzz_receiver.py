"""The local receiver of scripts/fuzz, on 127.0.0.1 (never another address): the webhook
endpoint and the SMS.ru gateway of the fuzzed service, so that webhooks and campaigns succeed.

- `POST /hook...`: any webhook delivery or ping; answers 200.
- `POST /sms/send`: SMS.ru's send call (docs/sms.md), `to[NUMBER]=text` for each number of a
  batch. It answers as SMS.ru does when the messages are accepted, except for two texts the
  fuzz hooks send on purpose: `fuzz-unknown` gets an unreadable answer, so the message's
  fate is `unknown` (what `POST /api/sms/messages/{id}/resolve` is for); `fuzz-hold` gets no
  answer until `POST /release`, so the campaign is still sending while the hooks cancel it.
- `POST /sms/cost`: SMS.ru's price call, 3.5 per number (the campaign preview's `price`).

Prints `http://127.0.0.1:PORT` on its first line once it listens; runs until killed.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import parse_qs

HOLD_SECONDS = 60  # at most: a held send is released by the hooks long before
_released = threading.Event()
_ids = count(1)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/release":
            _released.set()
            self._answer(200, b"released")
        elif self.path.startswith("/sms/send"):
            self._sms(parse_qs(body.decode("utf-8", "replace")))
        elif self.path.startswith("/sms/cost"):
            self._cost(parse_qs(body.decode("utf-8", "replace")))
        elif self.path.startswith("/hook"):
            self._answer(200, b"ok")
        else:
            self._answer(404, b"no such endpoint")

    def _sms(self, form: dict[str, list[str]]) -> None:
        # `to[NUMBER]=text` for up to 100 numbers, as the service sends (crm_core/sms/providers.py)
        messages = {
            k[3:-1]: v[0] for k, v in form.items() if k.startswith("to[") and k.endswith("]")
        }
        texts = " ".join(messages.values())
        if "fuzz-unknown" in texts:
            self._answer(200, b"<html>not what SMS.ru answers</html>")
            return
        if "fuzz-hold" in texts:
            _released.wait(HOLD_SECONDS)
        sms = {
            number: {"status": "OK", "status_code": 100, "sms_id": f"fuzz-{next(_ids)}"}
            for number in messages
        }
        answer = {"status": "OK", "status_code": 100, "sms": sms, "balance": 100.0}
        self._answer(200, json.dumps(answer).encode(), "application/json")

    def _cost(self, form: dict[str, list[str]]) -> None:
        numbers = [k for k in form if k.startswith("to[")]
        answer = {"status": "OK", "status_code": 100, "total_cost": 3.5 * len(numbers)}
        self._answer(200, json.dumps(answer).encode(), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: the service's access log tells what was called


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
