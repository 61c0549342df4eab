"""Verifies the DKIM signatures of a message with dkimpy, independently of mailroom.

Usage: /usr/bin/python3 dkim_verify.py MESSAGE_FILE RECORDS_JSON
RECORDS_JSON maps "<selector>._domainkey.<domain>" to the TXT record's value; dkimpy's DNS lookup is
replaced by a function that answers from it. Prints one line per signature: "<selector> pass|fail"
(dkimpy verifies the first signature by default; each is checked by index).
"""

import json
import sys

import dkim


def main():
    message = open(sys.argv[1], "rb").read()
    records = json.loads(sys.argv[2])

    def dnsfunc(name, timeout=5):
        key = name.decode() if isinstance(name, bytes) else name
        value = records.get(key.rstrip("."))
        return value.encode() if value is not None else None

    verifier = dkim.DKIM(message)
    signatures = [
        (name, value)
        for name, value in verifier.headers
        if name.lower() == b"dkim-signature"
    ]
    if not signatures:
        print("none")
        return
    for index, (_, value) in enumerate(signatures):
        tags = dict(
            part.strip().split("=", 1)
            for part in value.decode().replace("\r\n", "").split(";")
            if "=" in part
        )
        selector = tags.get("s", "?").strip()
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.DKIMException as error:
            print(f"{selector} fail {error}")
            continue
        print(f"{selector} {'pass' if ok else 'fail'}")


main()
