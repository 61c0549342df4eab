#!/usr/bin/env python3
"""Duplicates per SIGKILL: how many messages a crash makes the SMTP server receive twice.

Starts `mailroom serve` (the binary given) against a private smtp-sink that waits one second before
answering each DATA command (`-w 1`), queues MESSAGES messages for one account with 4 connections,
kills the server with SIGKILL while it is sending, starts it again on the same data folder, waits
until every message is sent and counts the Message-IDs the sink received more than once.

usage: duplicates_per_kill.py PATH/TO/mailroom [MESSAGES] [KILLS]
"""
import json, os, signal, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Peers

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 120
kills = int(sys.argv[3]) if len(sys.argv) > 3 else 1
peers = Peers(binary, ["-w", "1"],
              "poll_interval_ms = 50\nlease_ms = 3000\nretry_base_ms = 200\nretry_cap_ms = 800\n")
try:
    account = peers.account("kill", 4)
    for n in range(count):
        peers.call("POST", "/v1/messages", {"to": ["a@example.com"], "subject": f"kill {n}", "text": "t",
                                            "account_id": account["id"]})
    for kill in range(kills):
        time.sleep(2.5)
        peers.server.send_signal(signal.SIGKILL); peers.server.wait()
        peers.start()
    deadline = time.time() + 300
    while time.time() < deadline:
        if peers.call("GET", "/v1/sent?limit=1")["total"] >= count:
            break
        time.sleep(0.5)
    received = peers.dumped()
    print(json.dumps({"binary": binary, "messages": count, "kills": kills,
                      "received": sum(len(t) for t in received.values()), "distinct": len(received),
                      "duplicates": sum(len(t) - 1 for t in received.values())}))
finally:
    peers.close()
