#!/usr/bin/env python3
"""Record lag: how long after the SMTP server has a message mailroom records it as sent.

Runs `mailroom serve` (the binary given) against a private smtp-sink that waits one second before
answering each DATA command (`-w 1`), with one connection, sends messages and compares, for each,
the time smtp-sink wrote the message to disk (it has it) with the time mailroom recorded the
attempt as finished. A message sent but not yet recorded is re-sent after a crash, so the lag is
the window in which a SIGKILL costs a duplicate.

usage: record_lag.py PATH/TO/mailroom [MESSAGES]
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 12

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

work = tempfile.mkdtemp(); os.chmod(work, 0o755)
dumps = os.path.join(work, "dumps"); os.makedirs(dumps); os.chmod(dumps, 0o777)
sink_port, api_port = free_port(), free_port()
sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-w", "1", "-d", dumps + "/m.",
                         f"127.0.0.1:{sink_port}", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
data = os.path.join(work, "data"); os.makedirs(data)
with open(os.path.join(data, "mailroom.toml"), "w") as f:
    f.write("[engine]\npoll_interval_ms = 50\n")
server = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{api_port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    base = f"http://127.0.0.1:{api_port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/healthz"); break
        except Exception:
            time.sleep(0.05)
    token = open(os.path.join(data, "admin-token")).read().strip()
    def call(method, path, body=None):
        request = urllib.request.Request(base + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return json.loads(text) if text else None
    account = call("POST", "/v1/accounts", {"connector": "smtp", "name": "lag", "email_address": "lag@example.com",
        "host": "127.0.0.1", "port": sink_port, "security": "none", "concurrency_limit": 1})
    ids = [call("POST", "/v1/messages", {"to": ["a@example.com"], "subject": f"lag {n}", "text": "t",
                                         "account_id": account["id"]})["id"] for n in range(count)]
    deadline = time.time() + 120
    while time.time() < deadline:
        if all(call("GET", f"/v1/messages/{i}")["status"] == "sent" for i in ids):
            break
        time.sleep(0.2)
    arrived = {}
    for name in os.listdir(dumps):
        path = os.path.join(dumps, name)
        for line in open(path, errors="replace"):
            if line.lower().startswith("message-id:"):
                arrived[line.split(":", 1)[1].strip()] = os.path.getmtime(path)
                break
    lags = []
    for i in ids:
        message = call("GET", f"/v1/messages/{i}")
        finished = datetime.fromisoformat(message["attempts"][-1]["finished_at"].replace("Z", "+00:00")).timestamp()
        lags.append(finished - arrived[message["message_id"]])
    lags.sort()
    print(json.dumps({"binary": binary, "messages": count,
                      "median_lag_ms": round(statistics.median(lags) * 1000),
                      "max_lag_ms": round(max(lags) * 1000)}))
finally:
    server.terminate(); sink.terminate()
    server.wait(); sink.wait()
    shutil.rmtree(work, ignore_errors=True)
