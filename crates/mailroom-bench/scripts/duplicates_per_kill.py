#!/usr/bin/env python3
"""Duplicates per SIGKILL: how many messages a crash makes the SMTP server receive twice.

Starts `mailroom serve` (the binary given) against a private smtp-sink that waits one second before
answering each DATA command (`-w 1`), queues MESSAGES messages for one account with 4 connections,
kills the server with SIGKILL while it is sending, starts it again on the same data folder, waits
until every message is sent and counts the Message-IDs the sink received more than once.

usage: duplicates_per_kill.py PATH/TO/mailroom [MESSAGES] [KILLS]
"""
import collections, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 120
kills = int(sys.argv[3]) if len(sys.argv) > 3 else 1

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

work = tempfile.mkdtemp(); os.chmod(work, 0o755)
dumps = os.path.join(work, "dumps"); os.makedirs(dumps); os.chmod(dumps, 0o777)
sink_port, api_port = free_port(), free_port()
sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-w", "1", "-d", dumps + "/m.",
                         f"127.0.0.1:{sink_port}", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
data = os.path.join(work, "data"); os.makedirs(data)
with open(os.path.join(data, "mailroom.toml"), "w") as f:
    f.write("[engine]\npoll_interval_ms = 50\nlease_ms = 3000\nretry_base_ms = 200\nretry_cap_ms = 800\n")
base = f"http://127.0.0.1:{api_port}"

def start():
    server = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{api_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            urllib.request.urlopen(base + "/healthz"); return server
        except Exception:
            time.sleep(0.05)
    raise SystemExit("mailroom did not start")

server = start()
try:
    token = open(os.path.join(data, "admin-token")).read().strip()
    def call(method, path, body=None):
        request = urllib.request.Request(base + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return json.loads(text) if text else None
    account = call("POST", "/v1/accounts", {"connector": "smtp", "name": "kill", "email_address": "kill@example.com",
        "host": "127.0.0.1", "port": sink_port, "security": "none", "concurrency_limit": 4})
    ids = [call("POST", "/v1/messages", {"to": ["a@example.com"], "subject": f"kill {n}", "text": "t",
                                         "account_id": account["id"]})["id"] for n in range(count)]
    for kill in range(kills):
        time.sleep(2.5)
        server.send_signal(signal.SIGKILL); server.wait()
        server = start()
    deadline = time.time() + 300
    while time.time() < deadline:
        if call("GET", "/v1/sent?limit=1")["total"] >= count:
            break
        time.sleep(0.5)
    seen = collections.Counter()
    for name in os.listdir(dumps):
        for line in open(os.path.join(dumps, name), errors="replace"):
            if line.lower().startswith("message-id:"):
                seen[line.split(":", 1)[1].strip()] += 1
                break
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    print(json.dumps({"binary": binary, "messages": count, "kills": kills, "received": sum(seen.values()),
                      "distinct": len(seen), "duplicates": duplicates}))
finally:
    server.terminate(); sink.terminate()
    server.wait(); sink.wait()
    shutil.rmtree(work, ignore_errors=True)
