"""Square's official Python SDK as the judge of webhook signatures.

Reads JSON lines {"body", "signature_header", "signature_key", "notification_url"} on stdin
and prints, for each, `true` or `false`: whether the SDK's helper
square.utils.webhooks_helper.verify_signature (package `squareup`, pinned in
requirements-local.txt) accepts the signature. The helper raises ValueError for an empty key
or URL; that prints `false`.

`--version` prints the SDK's version and exits (non-zero when the SDK is missing).

Used by functions/square-relay/tests/signature_sdk.rs.
"""

import json
import sys


def main() -> int:
    try:
        from importlib.metadata import version

        from square.utils.webhooks_helper import verify_signature
    except ImportError as e:
        print(f"the squareup SDK is not installed: {e}", file=sys.stderr)
        return 3
    if sys.argv[1:] == ["--version"]:
        print(version("squareup"))
        return 0
    out = []
    # Lines are split on b"\n" only: a body may hold U+2028 or other separators that
    # str.splitlines() would split on.
    for raw in sys.stdin.buffer.read().split(b"\n"):
        if not raw.strip():
            continue
        case = json.loads(raw.decode("utf-8"))
        try:
            ok = verify_signature(
                request_body=case["body"],
                signature_header=case["signature_header"],
                signature_key=case["signature_key"],
                notification_url=case["notification_url"],
            )
        except ValueError:
            ok = False
        out.append("true" if ok else "false")
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
