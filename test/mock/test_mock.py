"""
Tests of the mock Maileroo API server (test/mock/maileroo_mock.py).

Run from the top of the repository:
    python3 test/mock/test_mock.py -v
or  python3 -m unittest discover -v -s test/mock
("python3 -m unittest test/mock/test_mock.py" imports the module as
test.mock.test_mock, which needs a test/__init__.py so that the top-level
"test" directory is not shadowed by Python's own "test" package.)

The server is started as a subprocess on a free port; the tests talk to it
over HTTP as the extension would, and use its /_mock control API.
"""

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "maileroo_mock.py")
KEY = "test-key"
SECRET = "whsec-test"
BOUNCE = "550 5.1.1 The email account that you tried to reach does not exist."


def start_mock(workdir, *extra):
    port_file = os.path.join(workdir, "port")
    log = os.path.join(workdir, "mock.log")
    proc = subprocess.Popen(
        [sys.executable, MOCK, "--host", "127.0.0.1", "--port", "0",
         "--port-file", port_file, "--log", log] + list(extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        if os.path.exists(port_file):
            with open(port_file) as f:
                text = f.read()
            if text.endswith("\n"):
                return proc, int(text), log
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mock did not start: %r" % (proc.communicate(),))


def future(**delta):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(**delta)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def message(**over):
    body = {"from": {"address": "sender@example.com", "display_name": "Sender"},
            "to": [{"address": "alice@example.org"}],
            "subject": "Hello", "html": "<p>Hi</p>", "plain": "Hi"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not Ellipsis}


class MockTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.proc, cls.port, cls.log = start_mock(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        try:
            cls.proc.wait(5)
        finally:
            if cls.proc.poll() is None:
                cls.proc.kill()
            cls.proc.communicate()
            cls.tmp.cleanup()

    def setUp(self):
        self.ctl("POST", "/_mock/reset")

    # -- helpers
    def conn(self, timeout=5):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def raw(self, method, path, body=None, headers=None, conn=None, timeout=5):
        c = conn or self.conn(timeout)
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, r, data
        finally:
            if conn is None:
                c.close()

    def api(self, method, path, body=None, key=KEY, headers=None, **kw):
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        status, resp, data = self.raw(method, "/api/v2" + path, body, h, **kw)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        doc = json.loads(data)
        self.assertEqual(set(doc), {"success", "message", "data"})
        return status, doc

    def ctl(self, method, path, body=None):
        status, _, data = self.raw(method, path, body)
        self.assertEqual(status, 200, data)
        return json.loads(data)

    def rule(self, **spec):
        return self.ctl("POST", "/_mock/rules", spec)

    def wait_open_connections(self, n):
        """The server notices a closed connection a moment after the client."""
        deadline = time.time() + 3
        while True:
            stats = self.ctl("GET", "/_mock/stats")
            if stats["open_connections"] == n or time.time() > deadline:
                return stats
            time.sleep(0.02)

    def send(self, **over):
        return self.api("POST", "/emails", message(**over))

    def accepted(self):
        """Reference ids of the mail the mock accepted (from its webhooks)."""
        return {json.loads(e["body"])["message_reference_id"]
                for e in self.ctl("GET", "/_mock/webhooks")}

    def assert400(self, path, body, msg):
        status, doc = self.api("POST", path, body)
        self.assertEqual((status, doc["success"], doc["message"], doc["data"]),
                         (400, False, msg, None))


class ApiTests(MockTestCase):
    def test_health(self):
        self.assertEqual(self.ctl("GET", "/_mock/health"), {"ok": True})

    def test_auth_required(self):
        want = {"success": False, "message": "Invalid or missing API key.", "data": None}
        for key, headers in ((None, {}), ("wrong", {}), (None, {"X-Api-Key": "nope"})):
            status, doc = self.api("POST", "/emails", message(), key=key, headers=headers)
            self.assertEqual((status, doc), (401, want))

    def test_auth_both_header_styles(self):
        status, doc = self.api("POST", "/emails", message())
        self.assertEqual(status, 200)
        status, doc = self.api("POST", "/emails", message(), key=None,
                               headers={"X-Api-Key": KEY})
        self.assertEqual(status, 200)

    def test_success_shape_and_fresh_reference_id(self):
        status, doc = self.send()
        self.assertEqual(status, 200)
        self.assertEqual(doc["success"], True)
        self.assertEqual(doc["message"], "The email has been queued for delivery.")
        ref = doc["data"]["reference_id"]
        self.assertRegex(ref, r"^[0-9a-f]{24}$")
        self.assertNotEqual(self.send()[1]["data"]["reference_id"], ref)

    def test_reference_id_echoed(self):
        ref = "0123456789abcdef01234567"
        status, doc = self.send(reference_id=ref, cc={"address": "c@example.net"},
                                bcc=None, reply_to=[{"address": "r@example.net"}])
        self.assertEqual((status, doc["data"]), (200, {"reference_id": ref}))
        status, doc = self.api("POST", "/emails/template",
                               message(html=..., plain=..., template_id=42,
                                       template_data={"name": "Al"}, reference_id=ref))
        self.assertEqual((status, doc["data"]["reference_id"]), (200, ref))

    def test_send_validation_messages(self):
        long_key = {"k" * 129: "v"}
        cases = [
            ("not json", "The request body must be a valid JSON object."),
            ([message()], "The request body must be a valid JSON object."),
            (message(**{"from": ...}), "The from field is required."),
            (message(**{"from": [{"address": "a@example.com"}]}),
             "The from field must be a single address object."),
            (message(**{"from": {"address": "no-at-sign"}}),
             "The from address must be a valid email address."),
            (message(to=...), "The to field is required."),
            (message(to="alice@example.org"),
             "The to field must be an address object or an array of address objects."),
            (message(cc=[{"address": "bad"}]), "The cc address must be a valid email address."),
            (message(subject=...), "The subject field is required."),
            (message(subject=""), "The subject field is required."),
            (message(subject="x" * 256), "The subject may not be greater than 255 characters."),
            (message(html=..., plain=...), "Either html or plain content is required."),
            (message(reference_id="abc"), "The reference_id must be a 24-character hexadecimal string."),
            (message(reference_id="g" * 24), "The reference_id must be a 24-character hexadecimal string."),
            (message(tags={"a": 1}), "The tags field must be an object with string keys and string values."),
            (message(tags=long_key), "The tags keys may not be greater than 128 characters "
             "and the values may not be greater than 768 characters."),
            (message(headers={"X-A": "v" * 769}), "The headers keys may not be greater than 128 "
             "characters and the values may not be greater than 768 characters."),
            (message(attachments=[{"content": "aGk="}]), "The attachments.0.file_name field is required."),
            (message(attachments=[{"file_name": "a.txt", "content": "aGVsbG8g\nd29ybGQ="}]),
             "The attachments.0.content must be a valid base64 string."),
            (message(attachments=[{"file_name": "a.txt", "content": "aGk=", "inline": "yes"}]),
             "The attachments.0.inline must be a boolean."),
            (message(scheduled_at="tomorrow"), "The scheduled_at must be a valid RFC 3339 date-time."),
            (message(scheduled_at=future(minutes=-5)), "The scheduled_at must be a date in the future."),
            (message(scheduled_at=future(days=22)),
             "The scheduled_at may not be more than 21 days in the future."),
        ]
        for body, msg in cases:
            with self.subTest(msg=msg, body=str(body)[:80]):
                self.assert400("/emails", body, msg)
        ok = message(attachments=[{"file_name": "a.txt", "content": "aGVsbG8=",
                                   "content_type": "text/plain", "inline": False}],
                     tags={"campaign": "spring"}, headers={"X-Tag": "1"}, tracking=True)
        self.assertEqual(self.api("POST", "/emails", ok)[0], 200)

    def test_template_validation(self):
        base = message(html=..., plain=...)
        self.assert400("/emails/template", base, "The template_id field is required.")
        self.assert400("/emails/template", dict(base, template_id="12"),
                       "The template_id must be an integer.")
        self.assert400("/emails/template", dict(base, template_id=12, template_data=[1]),
                       "The template_data must be an object.")
        status, doc = self.api("POST", "/emails/template", dict(base, template_id=12))
        self.assertEqual((status, doc["success"]), (200, True))

    def test_bulk(self):
        ref = "abcdefabcdefabcdefabcdef"
        one = {"from": {"address": "s@example.com"}, "to": {"address": "x@example.org"}}
        body = {"subject": "Hi", "plain": "Hello",
                "messages": [one, dict(one, reference_id=ref)]}
        status, doc = self.api("POST", "/emails/bulk", body)
        self.assertEqual(status, 200)
        refs = doc["data"]["reference_ids"]
        self.assertEqual(len(refs), 2)
        self.assertEqual(refs[1], ref)
        self.assert400("/emails/bulk", dict(body, messages=[]), "The messages field is required.")
        self.assert400("/emails/bulk", dict(body, messages=[one] * 501),
                       "The messages field may not have more than 500 items.")
        status, doc = self.api("POST", "/emails/bulk", dict(body, messages=[one] * 500))
        self.assertEqual(len(doc["data"]["reference_ids"]), 500)

    def test_bulk_shared_fields_and_messages(self):
        one = {"from": {"address": "s@example.com"}, "to": [{"address": "x@example.org"}],
               "template_data": {"first_name": "X"}}
        body = {"subject": "Hi", "template_id": 7, "tracking": True,
                "tags": {"campaign": "spring"}, "messages": [one]}
        status, doc = self.api("POST", "/emails/bulk", body)
        self.assertEqual((status, doc["success"]), (200, True))
        self.assertEqual(doc["message"], "The emails have been queued for delivery.")
        self.assertRegex(doc["data"]["reference_ids"][0], "^[0-9a-f]{24}$")
        self.assert400("/emails/bulk", dict(body, plain="hi"),
                       "The template_id cannot be combined with html or plain.")
        self.assert400("/emails/bulk", {"subject": "Hi", "messages": [one]},
                       "Either html, plain or template_id is required.")
        self.assert400("/emails/bulk", dict(body, subject=None), "The subject field is required.")
        self.assert400("/emails/bulk", dict(body, tags={"k": [1]}),
                       "The tags field must be an object with string keys and string values.")
        bad = dict(one, reference_id="nothex")
        self.assert400("/emails/bulk", dict(body, messages=[one, bad]),
                       "messages.1: The reference_id must be a 24-character hexadecimal string.")
        self.assert400("/emails/bulk", dict(body, messages=[one, dict(one, to=None)]),
                       "messages.1: The to field is required.")
        self.assert400("/emails/bulk", dict(body, messages=[dict(one, template_data=[1])]),
                       "messages.0: The template_data must be an object.")
        # A request refused as a whole accepts nothing.
        self.assertEqual(len(self.accepted()), 1)

    def test_bulk_refuse_rule(self):
        msgs = [{"from": {"address": "s@example.com"}, "to": {"address": a},
                 "reference_id": "%024x" % i}
                for i, a in enumerate(["a@example.org", "Refused@Example.org", "c@example.org"])]
        self.rule(path="/emails/bulk", refuse=["refused@example.org"])
        status, doc = self.api("POST", "/emails/bulk",
                               {"subject": "Hi", "plain": "x", "messages": msgs})
        self.assertEqual(status, 200)
        self.assertEqual(doc["data"]["reference_ids"], ["%024x" % 0, "%024x" % 2])
        self.assertEqual(self.accepted(), {"%024x" % 0, "%024x" % 2})
        # The rule was used up: the next request is accepted whole.
        status, doc = self.api("POST", "/emails/bulk",
                               {"subject": "Hi", "plain": "x", "messages": msgs})
        self.assertEqual(len(doc["data"]["reference_ids"]), 3)
        status, _, _ = self.raw("POST", "/_mock/rules", {"refuse": "a@example.org"})
        self.assertEqual(status, 400)

    def test_scheduled_list_pagination_and_delete(self):
        refs = []
        for i in range(5):
            status, doc = self.send(scheduled_at=future(hours=i + 1), subject="S%d" % i,
                                    tags={"n": str(i)})
            self.assertEqual(status, 200)
            refs.append(doc["data"]["reference_id"])
        self.send()  # not scheduled: not listed
        status, doc = self.api("GET", "/emails/scheduled?page=2&per_page=2")
        self.assertEqual(status, 200)
        data = doc["data"]
        self.assertEqual({k: data[k] for k in ("page", "per_page", "total_count", "total_pages")},
                         {"page": 2, "per_page": 2, "total_count": 5, "total_pages": 3})
        self.assertEqual([r["reference_id"] for r in data["results"]], refs[2:4])
        item = data["results"][0]
        self.assertEqual(item["from"], "Sender <sender@example.com>")
        self.assertEqual(item["recipients"], ["alice@example.org"])
        self.assertEqual(item["subject"], "S2")
        self.assertEqual(item["tags"], {"n": "2"})
        self.assertIsNone(item["headers"])
        self.assertRegex(item["scheduled_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        status, doc = self.api("GET", "/emails/scheduled?domain=other.com")
        self.assertEqual(doc["data"]["total_count"], 0)

        status, doc = self.api("DELETE", "/emails/scheduled/" + refs[0])
        self.assertEqual((status, doc["success"]), (200, True))
        status, doc = self.api("DELETE", "/emails/scheduled/" + refs[0])
        self.assertEqual((status, doc), (404, {"success": False, "data": None,
                                               "message": "The scheduled email was not found."}))
        self.assertEqual(self.api("GET", "/emails/scheduled")[1]["data"]["total_count"], 4)

    def test_scheduled_paging_limits(self):
        self.assertEqual(self.api("GET", "/emails/scheduled?per_page=100")[0], 200)
        self.assertEqual(self.api("GET", "/emails/scheduled?per_page=101")[0], 400)
        self.assertEqual(self.api("GET", "/emails/scheduled?page=0")[0], 400)

    def test_unknown_path_404(self):
        status, doc = self.api("GET", "/nothing/here")
        self.assertEqual((status, doc["success"], doc["data"]), (404, False, None))


class RuleTests(MockTestCase):
    def test_status_with_retry_after_then_normal(self):
        self.rule(path="/api/v2/emails", status=429, retry_after=3)
        status, resp, data = self.raw("POST", "/api/v2/emails", json.dumps(message()),
                                      {"Authorization": "Bearer " + KEY})
        self.assertEqual((status, resp.getheader("Retry-After")), (429, "3"))
        self.assertEqual(json.loads(data)["success"], False)
        self.assertEqual(self.send()[0], 200)

    def test_times_path_and_method_matching(self):
        self.rule(path="/emails/scheduled*", method="DELETE", status=500, times=2)
        self.rule(path="/api/v2/emails", status=503, json={"success": False, "message": "x",
                                                            "data": None}, times=0)
        self.assertEqual(self.api("GET", "/emails/scheduled")[0], 200)
        for _ in range(2):
            self.assertEqual(self.api("DELETE", "/emails/scheduled/" + "a" * 24)[0], 500)
        self.assertEqual(self.api("DELETE", "/emails/scheduled/" + "a" * 24)[0], 404)
        for _ in range(3):
            self.assertEqual(self.send(), (503, {"success": False, "message": "x", "data": None}))
        rules = self.ctl("GET", "/_mock/rules")
        self.assertEqual([(r["remaining"], r["hits"]) for r in rules], [(0, 2), (None, 3)])
        self.ctl("DELETE", "/_mock/rules")
        self.assertEqual(self.ctl("GET", "/_mock/rules"), [])
        self.assertEqual(self.send()[0], 200)

    def test_raw_body_and_headers(self):
        self.rule(status=500, body="oops", headers={"X-Trace": "t1"})
        status, resp, data = self.raw("POST", "/api/v2/emails", "{}")
        self.assertEqual((status, data, resp.getheader("X-Trace")), (500, b"oops", "t1"))

    def test_delay(self):
        self.rule(mode="ok", delay=0.4)
        t0 = time.monotonic()
        status, doc = self.send()
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        self.assertEqual((status, doc["success"]), (200, True))

    def test_hang_does_not_block_others(self):
        self.rule(mode="hang")
        c = self.conn(timeout=0.5)
        with self.assertRaises(socket.timeout):
            self.raw("POST", "/api/v2/emails", json.dumps(message()),
                     {"Authorization": "Bearer " + KEY}, conn=c)
        self.assertEqual(self.send()[0], 200)  # served while the other one hangs
        c.close()
        reqs = self.ctl("GET", "/_mock/requests")
        self.assertEqual([r["status"] for r in reqs], [None, 200])
        self.assertEqual(self.wait_open_connections(0)["open_connections"], 0)

    def test_drop(self):
        self.rule(mode="drop")
        with self.assertRaises((ConnectionError, http.client.RemoteDisconnected)):
            self.send()
        self.assertEqual([r["status"] for r in self.ctl("GET", "/_mock/requests")], [0])

    def test_malformed(self):
        self.rule(mode="malformed")
        status, resp, data = self.raw("POST", "/api/v2/emails", json.dumps(message()))
        self.assertEqual((status, data), (200, b'{"success":true,"data":{"refer'))
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        with self.assertRaises(ValueError):
            json.loads(data)

    def test_nonjson(self):
        self.rule(mode="nonjson")
        self.rule(mode="nonjson", status=503)
        for want in (502, 503):
            status, resp, data = self.raw("POST", "/api/v2/emails", "{}")
            self.assertEqual(status, want)
            self.assertTrue(resp.getheader("Content-Type").startswith("text/html"))
            self.assertEqual(data, b"<html><body><h1>502 Bad Gateway</h1></body></html>")

    def test_success_false(self):
        self.rule(mode="success_false")
        self.rule(mode="success_false", message="Domain not verified.")
        self.assertEqual(self.send(), (200, {"success": False, "data": None,
                                             "message": "The email could not be processed."}))
        self.assertEqual(self.send()[1]["message"], "Domain not verified.")

    def test_bad_rule_rejected(self):
        status, _, data = self.raw("POST", "/_mock/rules", json.dumps({"mode": "explode"}))
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(data)["ok"], False)


class RecordingTests(MockTestCase):
    def test_recording_and_keepalive_connection_ids(self):
        c = self.conn()
        for i in range(3):
            status, _, _ = self.raw("POST", "/api/v2/emails", json.dumps(message(subject="S%d" % i)),
                                    {"Authorization": "Bearer " + KEY, "X-Custom": "v%d" % i}, conn=c)
            self.assertEqual(status, 200)
        c.close()
        self.send()
        reqs = self.ctl("GET", "/_mock/requests")
        self.assertEqual([r["seq"] for r in reqs], [1, 2, 3, 4])
        self.assertEqual([r["conn"] for r in reqs], [1, 1, 1, 2])
        r = reqs[0]
        self.assertEqual((r["method"], r["path"], r["status"]), ("POST", "/api/v2/emails", 200))
        self.assertEqual(r["headers"]["x-custom"], "v0")
        self.assertEqual(r["headers"]["authorization"], "Bearer " + KEY)
        self.assertNotIn("host", r["headers"])
        self.assertEqual(r["json"]["subject"], "S0")
        self.assertEqual(json.loads(r["body"]), r["json"])
        self.assertEqual([x["seq"] for x in self.ctl("GET", "/_mock/requests?since=2")], [3, 4])
        self.assertEqual([x["seq"] for x in self.ctl("GET", "/_mock/requests?last=1")], [4])
        self.raw("GET", "/api/v2/emails/scheduled?page=1&per_page=5")
        last = self.ctl("GET", "/_mock/requests?last=1")[0]
        self.assertEqual((last["path"], last["json"], last["status"]),
                         ("/api/v2/emails/scheduled?page=1&per_page=5", None, 401))
        with open(self.log) as f:
            lines = [json.loads(x) for x in f]
        self.assertEqual(lines[-1]["path"], last["path"])

    def test_stats_and_clear(self):
        c = self.conn()
        self.raw("POST", "/api/v2/emails", json.dumps(message()),
                 {"Authorization": "Bearer " + KEY}, conn=c)
        self.raw("POST", "/api/v2/emails", "{}", {"Authorization": "Bearer " + KEY}, conn=c)
        self.raw("POST", "/api/v2/emails", "{}")
        stats = self.wait_open_connections(1)
        self.assertEqual(stats, {"requests": 3, "connections": 2, "open_connections": 1,
                                 "by_status": {"200": 1, "400": 1, "401": 1}})
        c.close()
        self.ctl("DELETE", "/_mock/requests")
        self.assertEqual(self.ctl("GET", "/_mock/requests"), [])
        self.assertEqual(self.ctl("GET", "/_mock/stats"),
                         {"requests": 0, "connections": 0, "open_connections": 0, "by_status": {}})

    def test_concurrent_burst(self):
        errors = []

        def worker():
            try:
                c = self.conn(timeout=10)
                for _ in range(20):
                    status, _, _ = self.raw("POST", "/api/v2/emails", json.dumps(message()),
                                            {"Authorization": "Bearer " + KEY}, conn=c)
                    if status != 200:
                        errors.append(status)
                c.close()
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        stats = self.ctl("GET", "/_mock/stats")
        self.assertEqual((stats["requests"], stats["connections"]), (2000, 100))

    def test_reset_clears_everything(self):
        self.rule(status=500, times=0)
        self.raw("POST", "/api/v2/emails", "{}")
        self.rule(path="/nowhere")
        self.ctl("DELETE", "/_mock/rules")
        self.send(scheduled_at=future(hours=1))
        self.send()
        self.assertEqual(len(self.ctl("GET", "/_mock/webhooks")), 4)
        self.ctl("POST", "/_mock/reset")
        self.assertEqual(self.ctl("GET", "/_mock/rules"), [])
        self.assertEqual(self.ctl("GET", "/_mock/requests"), [])
        self.assertEqual(self.ctl("GET", "/_mock/webhooks"), [])
        self.assertEqual(self.ctl("GET", "/_mock/stats")["requests"], 0)
        self.assertEqual(self.api("GET", "/emails/scheduled")[1]["data"]["total_count"], 0)


class KeyTests(MockTestCase):
    def test_rate_limit_token_bucket(self):
        self.ctl("POST", "/_mock/limits", {"key": KEY, "rate_limit": 10, "burst": 5,
                                         "retry_after": 2})
        statuses = [self.send()[0] for _ in range(8)]
        self.assertEqual(statuses[:5], [200] * 5)
        self.assertIn(429, statuses[5:])
        status, resp, data = self.raw("POST", "/api/v2/emails", json.dumps(message()),
                                      {"Authorization": "Bearer " + KEY})
        self.assertEqual((status, resp.getheader("Retry-After")), (429, "2"))
        self.assertEqual(json.loads(data)["success"], False)
        time.sleep(0.25)             # 10/s: two tokens come back
        self.assertEqual(self.send()[0], 200)
        keys = self.ctl("GET", "/_mock/limits")
        self.assertEqual(len(keys), 1)
        self.assertGreaterEqual(keys[0]["limited"], 2)
        self.assertEqual(self.ctl("GET", "/_mock/stats")["by_status"]["429"],
                         keys[0]["limited"])

    def test_rate_limit_holds_over_a_second(self):
        self.ctl("POST", "/_mock/limits", {"key": KEY, "rate_limit": 20})
        ok = 0
        start = time.time()
        while time.time() - start < 1.0:
            ok += self.send()[0] == 200
        # the burst (20) plus a second's refill (20), never more
        self.assertGreaterEqual(ok, 20)
        self.assertLessEqual(ok, 42)

    def test_rate_limit_is_per_key(self):
        self.ctl("POST", "/_mock/limits", {"key": "other", "valid": True,
                                         "rate_limit": 1, "burst": 1})
        self.assertEqual(self.api("POST", "/emails", message(), key="other")[0], 200)
        self.assertEqual(self.api("POST", "/emails", message(), key="other")[0], 429)
        for _ in range(5):
            self.assertEqual(self.send()[0], 200)

    def test_revoked_key(self):
        self.ctl("POST", "/_mock/limits", {"key": KEY, "revoked": True})
        status, doc = self.send()
        self.assertEqual((status, doc["message"]), (401, "Invalid or missing API key."))
        self.ctl("POST", "/_mock/limits", {"key": KEY, "revoked": False})
        self.assertEqual(self.send()[0], 200)
        self.ctl("POST", "/_mock/limits", {"key": KEY, "revoked": True})
        self.ctl("DELETE", "/_mock/limits")
        self.assertEqual(self.send()[0], 200)

    def test_reset_forgets_keys(self):
        self.ctl("POST", "/_mock/limits", {"key": KEY, "revoked": True})
        self.ctl("POST", "/_mock/reset")
        self.assertEqual(self.ctl("GET", "/_mock/limits"), [])
        self.assertEqual(self.send()[0], 200)

    def test_bad_key_settings_rejected(self):
        for spec in ({}, {"key": ""}, {"key": KEY, "rate_limit": -1},
                     {"key": KEY, "burst": 0}, {"key": KEY, "revoked": "yes"},
                     {"key": KEY, "colour": "red"}):
            status, _, data = self.raw("POST", "/_mock/limits", json.dumps(spec))
            self.assertEqual(status, 400, spec)
            self.assertFalse(json.loads(data)["ok"])


class WebhookTests(MockTestCase):
    def test_webhook_events(self):
        ref = "fedcba9876543210fedcba98"
        to = [{"address": "bounce.me@example.org"}, {"address": "complainer@example.org"},
              {"address": "Happy@example.org"}]
        self.send(to=to, reference_id=ref, tags={"campaign": "spring"})
        self.send(scheduled_at=future(hours=2))  # scheduled: no events yet
        hooks = self.ctl("GET", "/_mock/webhooks")
        self.assertEqual(hooks, self.ctl("GET", "/_mock/webhooks"))  # deterministic
        events = []
        for h in hooks:
            self.assertEqual(set(h), {"body", "signature"})
            want = hmac.new(SECRET.encode(), h["body"].encode(), hashlib.sha256).hexdigest()
            self.assertTrue(hmac.compare_digest(h["signature"], want))
            self.assertEqual(json.loads(h["body"]).keys(), set(json.loads(h["body"])))
            self.assertEqual(h["body"], json.dumps(json.loads(h["body"]), sort_keys=True,
                                                   separators=(",", ":")))
            events.append(json.loads(h["body"]))
        self.assertEqual([(e["event_type"], e["event_data"].get("to")) for e in events], [
            ("failed", "bounce.me@example.org"),
            ("delivered", "complainer@example.org"), ("complained", "complainer@example.org"),
            ("delivered", "Happy@example.org"), ("opened", None), ("opened", None),
            ("clicked", None)])
        self.assertEqual(events[0]["event_data"]["reason"],
                         "550 5.1.1 The email account that you tried to reach does not exist.")
        self.assertEqual(events[-1]["event_data"]["original_url"], "https://example.com/welcome")
        self.assertEqual(set(events[-1]["event_data"]), {"ip", "original_url", "user_agent"})
        self.assertEqual(set(events[4]["event_data"]), {"ip", "user_agent"})
        self.assertEqual(len({e["event_id"] for e in events}), len(events))
        for e in events:
            self.assertEqual(set(e), {"domain_id", "user_id", "event_id", "event_time",
                                      "event_type", "inserted_at", "message_id",
                                      "message_reference_id", "tags", "event_data"})
            self.assertRegex(e["event_id"], r"^[0-9a-f]{48}$")
            self.assertIsInstance(e["event_time"], int)
            self.assertRegex(e["inserted_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual(e["message_reference_id"], ref)
            self.assertEqual(e["message_id"], "<%s@mock.maileroo>" % ref)
            self.assertEqual(e["tags"], {"campaign": "spring"})
        other = self.ctl("GET", "/_mock/webhooks?secret=s2")
        self.assertEqual([h["body"] for h in other], [h["body"] for h in hooks])
        self.assertEqual(other[0]["signature"],
                         hmac.new(b"s2", other[0]["body"].encode(), hashlib.sha256).hexdigest())


class Receiver:
    """A webhook endpoint for the tests: records every POST, answers with
    answer(event_id, nth delivery of it) (default 200), and can be told to
    hold every request until release()."""

    def __init__(self, answer=None, hold=False):
        self.answer = answer or (lambda event_id, n: 200)
        self.lock = threading.Lock()
        self.got = []
        self.seen = {}
        self.held = 0
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        receiver = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    event_id = json.loads(raw)["event_id"]
                except (ValueError, KeyError, TypeError):
                    event_id = None
                with receiver.lock:
                    n = receiver.seen[event_id] = receiver.seen.get(event_id, 0) + 1
                    receiver.got.append({"path": self.path, "headers": dict(self.headers),
                                         "body": raw, "time": time.monotonic()})
                    receiver.held += 1
                receiver.gate.wait(30)
                with receiver.lock:
                    receiver.held -= 1
                status = receiver.answer(event_id, n)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hooks/maileroo?src=mock" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class WebhookDeliveryTests(MockTestCase):
    def setUp(self):
        super().setUp()
        self.receivers = []

    def tearDown(self):
        for r in self.receivers:
            r.close()

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.receivers.append(r)
        return r

    def target(self, **spec):
        return self.ctl("POST", "/_mock/webhook", spec)

    def settle(self, timeout=20):
        deadline = time.time() + timeout
        while True:
            st = self.ctl("GET", "/_mock/webhook")
            if st["queued"] == 0 or time.time() > deadline:
                return st
            time.sleep(0.05)

    def test_events_posted_one_per_request_signed(self):
        r = self.receiver()
        st = self.target(url=r.url)
        self.assertEqual((st["url"], st["max_attempts"], st["queued"]), (r.url, 6, 0))
        ref = "0123456789abcdef01234567"
        self.send(to=[{"address": "Bounce.Bob@example.org"}, {"address": "carol@example.org"}],
                  reference_id=ref, tags={"plan": "pro"})
        self.send(scheduled_at=future(hours=3))  # scheduled: nothing happens yet
        st = self.settle()
        expected = self.ctl("GET", "/_mock/webhooks")
        self.assertEqual(len(expected), 5)  # failed; delivered, opened x2, clicked
        self.assertEqual((st["queued"], st["delivered"], st["gave_up"], st["attempts"]),
                         (0, 5, 0, 5))
        self.assertEqual(sorted(g["body"].decode() for g in r.got),
                         sorted(e["body"] for e in expected))
        for g in r.got:
            self.assertEqual(g["path"], "/hooks/maileroo?src=mock")
            self.assertEqual(g["headers"]["Content-Type"], "application/json")
            want = hmac.new(SECRET.encode(), g["body"], hashlib.sha256).hexdigest()
            self.assertEqual(g["headers"]["X-Maileroo-Signature"], want)
            ev = json.loads(g["body"])
            self.assertIsInstance(ev, dict)  # one event per request, not a list
            self.assertEqual(ev["message_reference_id"], ref)
        events = {json.loads(g["body"])["event_type"]: json.loads(g["body"]) for g in r.got}
        self.assertEqual(set(events), {"failed", "delivered", "opened", "clicked"})
        self.assertEqual(events["failed"]["event_data"],
                         {"to": "Bounce.Bob@example.org", "reason": BOUNCE})
        self.assertEqual(events["delivered"]["event_data"], {"to": "carol@example.org"})
        log = self.ctl("GET", "/_mock/deliveries")
        self.assertEqual([(d["attempt"], d["status"], d["outcome"]) for d in log],
                         [(1, 200, "delivered")] * 5)
        self.assertEqual(self.ctl("GET", "/_mock/deliveries?since=%d" % log[2]["seq"]), log[3:])
        # The same reference_id accepted again (a client's retry) posts nothing new.
        self.send(reference_id=ref)
        self.assertEqual(self.settle()["attempts"], 5)

    def test_retries_with_backoff_until_2xx(self):
        r = self.receiver(answer=lambda event_id, n: 503 if n <= 2 else 204)
        self.target(url=r.url, backoff=0.2)
        self.send(to=[{"address": "bounce@example.org"}])
        st = self.settle()
        self.assertEqual((st["delivered"], st["gave_up"], st["attempts"]), (1, 0, 3))
        log = self.ctl("GET", "/_mock/deliveries")
        self.assertEqual([(d["attempt"], d["status"], d["outcome"]) for d in log],
                         [(1, 503, "retry"), (2, 503, "retry"), (3, 204, "delivered")])
        self.assertEqual(len({g["body"] for g in r.got}), 1)  # the same bytes each time
        t = [g["time"] for g in r.got]
        self.assertGreaterEqual(t[1] - t[0], 0.2)
        self.assertGreaterEqual(t[2] - t[1], 0.4)  # doubled

    def test_gives_up_after_max_attempts(self):
        r = self.receiver(answer=lambda event_id, n: 500)
        self.target(url=r.url, backoff=0.01, max_attempts=3)
        self.send(to=[{"address": "bounce@example.org"}, {"address": "bounce2@example.org"}])
        st = self.settle()
        self.assertEqual((st["delivered"], st["gave_up"], st["attempts"]), (0, 2, 6))
        self.assertEqual(len(r.got), 6)
        outcomes = sorted((d["event_id"], d["attempt"], d["outcome"])
                          for d in self.ctl("GET", "/_mock/deliveries"))
        self.assertEqual([o[1:] for o in outcomes],
                         [(1, "retry"), (2, "retry"), (3, "gave_up")] * 2)

    def test_unreachable_receiver(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        self.target(url="http://127.0.0.1:%d/" % port, backoff=0.01, max_attempts=2)
        self.send(to=[{"address": "bounce@example.org"}])
        st = self.settle()
        self.assertEqual((st["gave_up"], st["attempts"]), (1, 2))
        d = self.ctl("GET", "/_mock/deliveries")[-1]
        self.assertEqual((d["status"], d["outcome"]), (0, "gave_up"))
        self.assertIn("Connection", d["error"])

    def test_send_path_does_not_wait_for_the_receiver(self):
        r = self.receiver(hold=True)
        self.target(url=r.url)
        for i in range(5):
            status, doc = self.send(to=[{"address": "user%d@example.org" % i}])
            self.assertEqual((status, doc["success"]), (200, True))
        # Every send was answered while the receiver held every delivery:
        # at most --webhook-concurrency (4) of them are waiting on it.
        with r.lock:
            self.assertLessEqual(r.held, 4)
            self.assertEqual(len(r.got), r.held)
        self.assertEqual(self.ctl("GET", "/_mock/webhook")["queued"], 20)
        r.release()
        st = self.settle()
        self.assertEqual((st["delivered"], st["queued"]), (20, 0))

    def test_reset_and_off(self):
        r = self.receiver(hold=True)
        self.target(url=r.url)
        self.send()
        self.ctl("POST", "/_mock/reset")
        r.release()
        st = self.settle()
        self.assertEqual((st["url"], st["queued"], st["delivered"], st["attempts"]),
                         (None, 0, 0, 0))  # reset: back to the command line's (none)
        self.assertEqual(self.ctl("GET", "/_mock/deliveries"), [])
        # Requests the reset caught in flight may still land: wait for quiet.
        n, deadline = -1, time.time() + 5
        while n != len(r.got) and time.time() < deadline:
            n = len(r.got)
            time.sleep(0.3)
        self.send()
        time.sleep(0.3)
        self.assertEqual(len(r.got), n)  # no URL: nothing is posted

    def test_bad_configuration(self):
        for spec, msg in [({"url": "ftp://x/"}, "http"), ({"url": 5}, "string"),
                          ({"max_attempts": 0}, "max_attempts"), ({"backoff": -1}, "backoff"),
                          ({"secret": None}, "secret"), ({"bogus": 1}, "unknown")]:
            status, _, data = self.raw("POST", "/_mock/webhook", spec)
            self.assertEqual(status, 400, spec)
            self.assertIn(msg, json.loads(data)["error"])

    def test_other_secret(self):
        r = self.receiver()
        self.target(url=r.url, secret="s3")
        self.send()
        self.settle()
        g = r.got[0]
        self.assertEqual(g["headers"]["X-Maileroo-Signature"],
                         hmac.new(b"s3", g["body"], hashlib.sha256).hexdigest())


class ProcessTests(unittest.TestCase):
    def test_refuses_non_loopback(self):
        p = subprocess.run([sys.executable, MOCK, "--host", "0.0.0.0", "--port", "0"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("loopback", p.stderr)

    def test_sigterm_while_hanging(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port, _ = start_mock(tmp, "--api-key", "k2")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("POST", "/_mock/rules", json.dumps({"mode": "hang"}))
                c.getresponse().read()
                c.request("POST", "/api/v2/emails", json.dumps(message()),
                          {"Authorization": "Bearer k2"})
                time.sleep(0.2)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(5), 0)
                self.assertLess(time.monotonic() - t0, 3)
                c.close()
            finally:
                if proc.poll() is None:
                    proc.kill()
                out, err = proc.communicate()
            self.assertEqual(err, b"")  # quiet: no per-request logging
            self.assertIn(b"listening on http://127.0.0.1:%d/api/v2" % port, out)


    def test_webhook_url_on_the_command_line(self):
        r = Receiver()
        with tempfile.TemporaryDirectory() as tmp:
            proc, port, _ = start_mock(tmp, "--webhook-url", r.url, "--webhook-secret", "cli")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("POST", "/api/v2/emails", json.dumps(message()),
                          {"Authorization": "Bearer test-key"})
                self.assertEqual(c.getresponse().status, 200)
                deadline = time.time() + 20
                while len(r.got) < 4 and time.time() < deadline:
                    time.sleep(0.05)
                self.assertEqual(len(r.got), 4)
                g = r.got[0]
                self.assertEqual(g["headers"]["X-Maileroo-Signature"],
                                 hmac.new(b"cli", g["body"], hashlib.sha256).hexdigest())
                c.close()
            finally:
                r.close()
                proc.send_signal(signal.SIGTERM)
                proc.wait(5)
                proc.communicate()
        p = subprocess.run([sys.executable, MOCK, "--port", "0", "--webhook-url", "nope"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--webhook-url", p.stderr)


if __name__ == "__main__":
    unittest.main()
