#!/usr/bin/env python3
"""Record lag: how long after the SMTP server has a message mailroom records it as sent.

Runs `mailroom serve` (the binary given) against a private smtp-sink that waits one second before
answering each DATA command (`-w 1`), with one connection, sends messages and compares, for each,
the time smtp-sink wrote the message to disk (it has it) with the time mailroom recorded the
attempt as finished. A message sent but not yet recorded is re-sent after a crash, so the lag is
the window in which a SIGKILL costs a duplicate.

usage: record_lag.py PATH/TO/mailroom [MESSAGES]
"""
import json, os, statistics, sys, time
from datetime import datetime
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Peers

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 12
peers = Peers(binary, ["-w", "1"], "poll_interval_ms = 50\n")
try:
    account = peers.account("lag", 1)
    ids = [peers.call("POST", "/v1/messages", {"to": ["a@example.com"], "subject": f"lag {n}", "text": "t",
                                               "account_id": account["id"]})["id"] for n in range(count)]
    deadline = time.time() + 120
    while time.time() < deadline:
        if all(peers.call("GET", f"/v1/messages/{i}")["status"] == "sent" for i in ids):
            break
        time.sleep(0.2)
    arrived = peers.dumped()
    lags = []
    for i in ids:
        message = peers.call("GET", f"/v1/messages/{i}")
        finished = datetime.fromisoformat(message["attempts"][-1]["finished_at"].replace("Z", "+00:00")).timestamp()
        lags.append(finished - arrived[message["message_id"]][0])
    print(json.dumps({"binary": binary, "messages": count,
                      "median_lag_ms": round(statistics.median(lags) * 1000),
                      "max_lag_ms": round(max(lags) * 1000)}))
finally:
    peers.close()
