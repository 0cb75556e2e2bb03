#!/usr/bin/env python3
"""
show_requests.py: print the last API requests the mock Maileroo server
received, for the send_* regress tests.

    show_requests.py [N] [--mask-ref] [--headers]

For each of the last N requests (default 1), oldest first: the method, the
path and the status the mock answered, then the body exactly as received.
--mask-ref replaces generated reference ids with <reference_id> (after
checking they are 24 lowercase hex characters); a scheduled_at equal to
$EXPECT_SCHEDULED is shown as <scheduled_at as expected>.  --headers also
prints the headers that matter (the key itself is never printed).
"""
import json
import os
import re
import sys
import urllib.request

args = [a for a in sys.argv[1:] if not a.startswith("--")]
n = int(args[0]) if args else 1
mask_ref = "--mask-ref" in sys.argv
show_headers = "--headers" in sys.argv

url = os.environ["MAILEROO_MOCK_URL"] + "/_mock/requests?last=%d" % n
with urllib.request.urlopen(url, timeout=30) as r:
    reqs = json.load(r)
    if isinstance(reqs, dict):
        reqs = reqs["requests"]

expect_sched = os.environ.get("EXPECT_SCHEDULED")
for req in reqs:
    print("%s %s -> %s" % (req["method"], req["path"], req["status"]))
    if show_headers:
        h = req["headers"]
        auth = h.get("authorization", "")
        print("  authorization: %s" % ("Bearer <the key>" if auth == "Bearer test-key" else "<other>"))
        print("  content-type: %s" % h.get("content-type"))
        print("  accept: %s" % h.get("accept"))
        ua = h.get("user-agent", "")
        print("  user-agent: %s" % re.sub(r"/[0-9][^ ]*", "/<version>", ua))
    body = req["body"]
    if mask_ref:
        def sub(m):
            return '"reference_id":"<reference_id>"' if re.fullmatch(r"[0-9a-f]{24}", m.group(1)) else m.group(0)
        body = re.sub(r'"reference_id":"([^"]*)"', sub, body)
    if expect_sched:
        body = body.replace('"scheduled_at":"%s"' % expect_sched,
                            '"scheduled_at":"<scheduled_at as expected>"')
    if body:
        print("  " + body)
