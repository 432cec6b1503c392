#!/usr/bin/env python3
"""An independent Standard Webhooks v1 verifier for the tests: Python's
hmac, hashlib and base64, nothing of Kiln's.

Usage: verify_webhook.py SECRET MSG_ID TIMESTAMP BODY_FILE SIGNATURE_HEADER
Prints "valid" and exits 0 when one of the space-separated v1 signatures is
HMAC-SHA256(base64decode(SECRET without "whsec_"), "MSG_ID.TIMESTAMP.BODY"),
base64-encoded; otherwise prints "invalid, expected v1,<sig>" and exits 1.
"""
import base64
import hashlib
import hmac
import sys


def main(secret, msg_id, timestamp, body_file, header):
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    with open(body_file, "rb") as f:
        body = f.read()
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for part in header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            print("valid")
            return 0
    print("invalid, expected v1," + expected)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
