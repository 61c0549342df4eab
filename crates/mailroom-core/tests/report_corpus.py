"""For each delivery status notification and feedback report of the inbound corpus, what Python's
`email` package reads in it: per recipient of a DSN (Final-Recipient, else Original-Recipient) its
Action and Status; of a feedback report its Feedback-Type and Original-Rcpt-To. One JSON object per
file on stdout. Used by tests/report_corpus.rs as an independent parser to compare with."""
import email
import email.policy
import json
import sys


def address(value):
    value = value.split(";", 1)[1] if ";" in value else value
    return value.strip().strip("<>").strip().lower()


def read(path):
    with open(path, "rb") as f:
        message = email.message_from_binary_file(f, policy=email.policy.compat32)
    result = {"recipients": [], "feedback_type": None}
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list):
                continue
            for block in blocks[1:]:
                recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
                if recipient is None:
                    continue
                status = (block.get("Status") or "").split()
                result["recipients"].append(
                    {
                        "recipient": address(str(recipient)),
                        "action": (block.get("Action") or "").strip().lower(),
                        "status": status[0] if status else "",
                    }
                )
            return result
        if kind == "message/feedback-report":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else [email.message_from_string(payload)]
            for block in blocks:
                if block.get("Feedback-Type"):
                    result["feedback_type"] = block.get("Feedback-Type").strip().lower()
                for value in block.get_all("Original-Rcpt-To") or []:
                    result["recipients"].append({"recipient": address(value)})
            return result
    return result


for path in sys.argv[1:]:
    print(json.dumps({"file": path.rsplit("/", 1)[-1], **read(path)}))
