#!/usr/bin/env python3
"""
maileroo_mock.py: a local stand-in for the Maileroo sending API (v2).

The test suites point a sending account's api_url at this server
(http://127.0.0.1:PORT/api/v2) so that sending can be tested without the
network.  It validates requests the way Maileroo does, records every API
request, keeps scheduled mail in memory, can be told to misbehave (errors,
delays, hung or dropped connections, broken bodies), and can produce signed
webhook events for the mail it accepted.  Python 3 standard library only.

Usage:
    maileroo_mock.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
                     [--api-key test-key] [--webhook-secret whsec-test]
                     [--webhook-url URL] [--webhook-attempts 6]
                     [--webhook-backoff 0.5] [--webhook-concurrency 4]
                     [--log PATH] [--verbose]

    --host            address to listen on; only loopback addresses are allowed
    --port            TCP port; 0 picks a free one
    --port-file       once listening, write the port number there (atomically)
    --api-key         a key clients may send (Authorization: Bearer KEY or
                      X-Api-Key: KEY); repeat it to accept several (default
                      test-key); POST /_mock/keys changes them at run time
    --webhook-secret  the secret webhook events are signed with
    --webhook-url     where to POST the webhook events of accepted mail, as
                      Maileroo does (default: nowhere; see /_mock/webhook)
    --webhook-attempts  deliveries tried per event before giving up
    --webhook-backoff   seconds before the first retry; doubles each time,
                        at most 30 s
    --webhook-concurrency  events in flight at once
    --log             append one JSON line per recorded API request
    --verbose         log each request to stderr

API (prefix /api/v2), answers are {"success": bool, "message": str, "data": ...}:
    POST   /api/v2/emails                       send one message
    POST   /api/v2/emails/template              send one message from a template
    POST   /api/v2/emails/bulk                  send up to 500 messages
    GET    /api/v2/emails/scheduled?page=&per_page=&domain=
    DELETE /api/v2/emails/scheduled/{reference_id}

Control API (no authentication, plain JSON):
    GET    /_mock/health              {"ok": true}
    GET    /_mock/requests[?since=SEQ][&last=N]   recorded API requests
    DELETE /_mock/requests            forget requests, connection ids, stats
    GET    /_mock/stats               {"requests", "connections",
                                       "open_connections", "by_status"}
    GET    /_mock/rules               the rules, with "remaining" and "hits"
    POST   /_mock/rules               add one rule (object) or several (list)
    DELETE /_mock/rules               remove all rules
    GET    /_mock/scheduled           the scheduled mail held in memory
    GET    /_mock/keys                {"keys": [...]}: the keys accepted now
    POST   /_mock/keys                {"keys": [...]}: accept these instead
    POST   /_mock/reset               rules, requests, scheduled mail, stats,
                                      and the keys given at start
    GET    /_mock/webhooks[?secret=S] signed webhook events for accepted mail
    GET    /_mock/webhook             where events are delivered, and counts:
                                      {"url", "max_attempts", "backoff",
                                       "queued", "delivered", "gave_up",
                                       "attempts"}
    POST   /_mock/webhook             change that: {"url": URL or null,
                                       "secret", "max_attempts", "backoff"}
    GET    /_mock/deliveries[?since=SEQ]  every delivery attempt:
                                      {"seq", "time", "event_id",
                                       "event_type", "message_reference_id",
                                       "attempt", "status", "error", "outcome"}

Webhook delivery: once a message is accepted (not scheduled), each of its
events (see webhook_events: delivered, opened twice and clicked; a failed
bounce with a 5xx reason for a recipient whose local part starts with
"bounce"; complained for "complain...") is POSTed on its own, signed with
X-Maileroo-Signature (lowercase hex HMAC-SHA256 of the raw body), by
background threads, so the send path never waits for the receiver.  A non-2xx
answer or a network error is retried with exponential backoff, up to
max_attempts deliveries; the outcome of each attempt is "delivered", "retry"
or "gave_up".

A rule (matched in the order added, against API requests only):
    {"path": "/api/v2/emails" | "/api/v2/emails*" (a trailing * is a prefix;
             a path not starting with /api/v2 is taken relative to it;
             default: every API path),
     "method": "POST", "times": 1 (0 or null: forever),
     "status": 500, "body": "raw text" | "json": {...}, "message": "...",
     "headers": {"X-Extra": "1"}, "retry_after": 2, "delay": 0.5,
     "mode": "hang" | "drop" | "malformed" | "nonjson" | "success_false" | "ok",
     "refuse": ["x@example.org"]}
A rule with neither status nor mode (or mode "ok") lets the request be
processed normally, after its delay and with its extra headers; with
"refuse", a bulk request's messages to those addresses are refused alone:
left out of data.reference_ids and not accepted.

Recorded requests are
    {"seq", "time", "method", "path", "headers", "body", "json", "conn",
     "status"}
where status is null for a request left hanging and 0 for a dropped one.
"""

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import heapq
import hmac
import http.client
import ipaddress
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_PREFIX = "/api/v2"
MOCK_PREFIX = "/_mock"
MAX_BODY = 64 * 1024 * 1024
MAX_SUBJECT = 255
MAX_MAP_KEY = 128
MAX_MAP_VALUE = 768
MAX_BULK = 500
MAX_SCHEDULE_AHEAD = dt.timedelta(days=21)

EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
REF_RE = re.compile(r"^[0-9a-fA-F]{24}$")
RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-]\d{2}:\d{2})$")

WEBHOOK_TIMEOUT = 10
WEBHOOK_MAX_BACKOFF = 30.0
WEBHOOK_USER_AGENT = "maileroo-mock-webhooks/1.0"

MODES = ("hang", "drop", "malformed", "nonjson", "success_false", "ok")
MALFORMED_BODY = b'{"success":true,"data":{"refer'
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

BOUNCE_REASON = "550 5.1.1 The email account that you tried to reach does not exist."
CLICK_URL = "https://example.com/welcome"
UA_DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
UA_MOBILE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
             "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148")
WEBHOOK_DOMAIN_ID = 1001
WEBHOOK_USER_ID = 501

MSG_QUEUED = "The email has been queued for delivery."
MSG_BULK_QUEUED = "The emails have been queued for delivery."
MSG_BAD_BODY = "The request body must be a valid JSON object."
MSG_AUTH = "Invalid or missing API key."
MSG_NOT_FOUND = "The requested resource was not found."
MSG_SCHED_NOT_FOUND = "The scheduled email was not found."
MSG_REFERENCE = "The reference_id must be a 24-character hexadecimal string."


class ValidationError(Exception):
    pass


class BadRule(Exception):
    pass


# ---------------------------------------------------------------- helpers

def envelope(success, message, data=None):
    return {"success": success, "message": message, "data": data}


def utc_now():
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(ts):
    ts = ts.astimezone(dt.timezone.utc)
    s = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        s += (".%06d" % ts.microsecond).rstrip("0")
    return s + "Z"


def parse_rfc3339(text):
    if not isinstance(text, str):
        return None
    m = RFC3339_RE.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = dt.timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            return None
        tz = dt.timezone(sign * dt.timedelta(hours=zh, minutes=zm))
    try:
        return dt.datetime(y, mo, d, h, mi, s, micro, tzinfo=tz)
    except ValueError:
        return None


def format_address(addr):
    address, name = addr
    return "%s <%s>" % (name, address) if name else address


# ------------------------------------------------------------- validation

def check_address(obj, field):
    if not isinstance(obj, dict):
        raise ValidationError(
            "The %s field must be an address object or an array of address objects." % field)
    address = obj.get("address")
    if not isinstance(address, str) or not EMAIL_RE.match(address):
        raise ValidationError("The %s address must be a valid email address." % field)
    name = obj.get("display_name")
    if name is not None and not isinstance(name, str):
        raise ValidationError("The %s display_name must be a string." % field)
    return (address, name or None)


def check_address_list(value, field, required):
    if value is None or (isinstance(value, list) and not value):
        if required:
            raise ValidationError("The %s field is required." % field)
        return []
    if isinstance(value, dict):
        return [check_address(value, field)]
    if isinstance(value, list):
        return [check_address(v, field) for v in value]
    raise ValidationError(
        "The %s field must be an address object or an array of address objects." % field)


def check_from(value):
    if value is None:
        raise ValidationError("The from field is required.")
    if isinstance(value, list):
        raise ValidationError("The from field must be a single address object.")
    if not isinstance(value, dict):
        raise ValidationError("The from field must be an address object.")
    return check_address(value, "from")


def check_subject(value):
    if not isinstance(value, str) or value.strip() == "":
        raise ValidationError("The subject field is required.")
    if len(value) > MAX_SUBJECT:
        raise ValidationError("The subject may not be greater than 255 characters.")
    return value


def check_map(value, field):
    if value is None:
        return None
    bad = "The %s field must be an object with string keys and string values." % field
    if not isinstance(value, dict):
        raise ValidationError(bad)
    for k, v in value.items():
        if not isinstance(v, str):
            raise ValidationError(bad)
        if len(k) > MAX_MAP_KEY or len(v) > MAX_MAP_VALUE:
            raise ValidationError(
                "The %s keys may not be greater than 128 characters and the values "
                "may not be greater than 768 characters." % field)
    return value


def check_attachments(value):
    if value is None:
        return
    if not isinstance(value, list):
        raise ValidationError("The attachments field must be an array.")
    for i, a in enumerate(value):
        if not isinstance(a, dict):
            raise ValidationError("The attachments.%d field must be an object." % i)
        name = a.get("file_name")
        if not isinstance(name, str) or name.strip() == "":
            raise ValidationError("The attachments.%d.file_name field is required." % i)
        content = a.get("content")
        if not isinstance(content, str) or content == "":
            raise ValidationError("The attachments.%d.content field is required." % i)
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError(
                "The attachments.%d.content must be a valid base64 string." % i)
        ctype = a.get("content_type")
        if ctype is not None and (not isinstance(ctype, str) or ctype.strip() == ""):
            raise ValidationError("The attachments.%d.content_type must be a string." % i)
        inline = a.get("inline")
        if inline is not None and not isinstance(inline, bool):
            raise ValidationError("The attachments.%d.inline must be a boolean." % i)


def check_scheduled_at(value):
    if value is None:
        return None
    ts = parse_rfc3339(value)
    if ts is None:
        raise ValidationError("The scheduled_at must be a valid RFC 3339 date-time.")
    now = utc_now()
    if ts <= now:
        raise ValidationError("The scheduled_at must be a date in the future.")
    if ts > now + MAX_SCHEDULE_AHEAD:
        raise ValidationError("The scheduled_at may not be more than 21 days in the future.")
    return ts


def check_reference_id(value):
    if value is None:
        return None
    if not isinstance(value, str) or not REF_RE.match(value):
        raise ValidationError(MSG_REFERENCE)
    return value


def check_template_id(value):
    if value is None:
        raise ValidationError("The template_id field is required.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("The template_id must be an integer.")
    return value


def check_template_data(value):
    if value is not None and not isinstance(value, dict):
        raise ValidationError("The template_data must be an object.")


def check_bool(body, field):
    v = body.get(field)
    if v is not None and not isinstance(v, bool):
        raise ValidationError("The %s field must be a boolean." % field)


def check_content(body):
    for k in ("html", "plain"):
        v = body.get(k)
        if v is not None and not isinstance(v, str):
            raise ValidationError("The %s field must be a string." % k)
    return bool(body.get("html")) or bool(body.get("plain"))


def validate_send(body, template):
    """Validate /emails or /emails/template; return a summary of the message."""
    if not isinstance(body, dict):
        raise ValidationError(MSG_BAD_BODY)
    sender = check_from(body.get("from"))
    to = check_address_list(body.get("to"), "to", True)
    cc = check_address_list(body.get("cc"), "cc", False)
    bcc = check_address_list(body.get("bcc"), "bcc", False)
    check_address_list(body.get("reply_to"), "reply_to", False)
    subject = check_subject(body.get("subject"))
    if template:
        check_template_id(body.get("template_id"))
        check_template_data(body.get("template_data"))
    elif not check_content(body):
        raise ValidationError("Either html or plain content is required.")
    check_bool(body, "tracking")
    tags = check_map(body.get("tags"), "tags")
    headers = check_map(body.get("headers"), "headers")
    check_attachments(body.get("attachments"))
    scheduled = check_scheduled_at(body.get("scheduled_at"))
    ref = check_reference_id(body.get("reference_id")) or secrets.token_hex(12)
    return {"reference_id": ref, "from": sender, "to": to,
            "recipients": [a for a, _ in to + cc + bcc], "subject": subject,
            "tags": tags, "headers": headers, "scheduled_at": scheduled}


def validate_bulk(body):
    if not isinstance(body, dict):
        raise ValidationError(MSG_BAD_BODY)
    subject = check_subject(body.get("subject"))
    has_content = check_content(body)
    has_template = body.get("template_id") is not None
    if has_template:
        check_template_id(body.get("template_id"))
        if has_content:
            raise ValidationError("The template_id cannot be combined with html or plain.")
    elif not has_content:
        raise ValidationError("Either html, plain or template_id is required.")
    check_bool(body, "tracking")
    tags = check_map(body.get("tags"), "tags")
    headers = check_map(body.get("headers"), "headers")
    check_attachments(body.get("attachments"))
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ValidationError("The messages field is required.")
    if len(msgs) > MAX_BULK:
        raise ValidationError("The messages field may not have more than 500 items.")
    out = []
    for i, m in enumerate(msgs):
        try:
            if not isinstance(m, dict):
                raise ValidationError("The message must be an object.")
            sender = check_from(m.get("from"))
            to = check_address_list(m.get("to"), "to", True)
            cc = check_address_list(m.get("cc"), "cc", False)
            bcc = check_address_list(m.get("bcc"), "bcc", False)
            check_address_list(m.get("reply_to"), "reply_to", False)
            check_template_data(m.get("template_data"))
            ref = check_reference_id(m.get("reference_id")) or secrets.token_hex(12)
        except ValidationError as e:
            raise ValidationError("messages.%d: %s" % (i, e))
        out.append({"reference_id": ref, "from": sender, "to": to,
                    "recipients": [a for a, _ in to + cc + bcc], "subject": subject,
                    "tags": tags, "headers": headers, "scheduled_at": None})
    return out


# ------------------------------------------------------------------ rules

def normalize_rule(spec, rule_id):
    if not isinstance(spec, dict):
        raise BadRule("a rule must be a JSON object")
    known = {"path", "method", "times", "status", "body", "json", "headers",
             "delay", "retry_after", "mode", "message", "refuse"}
    unknown = set(spec) - known
    if unknown:
        raise BadRule("unknown rule keys: %s" % ", ".join(sorted(unknown)))
    path = spec.get("path")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise BadRule("path must be a non-empty string")
        if path != "*" and not path.startswith(API_PREFIX):
            path = API_PREFIX + ("" if path.startswith("/") else "/") + path
    method = spec.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise BadRule("method must be a string")
        method = method.upper()
    times = spec.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise BadRule("times must be a non-negative integer or null")
    if times == 0:
        times = None
    status = spec.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                               or not 200 <= status <= 599):
        raise BadRule("status must be an integer between 200 and 599")
    body = spec.get("body")
    if body is not None and not isinstance(body, str):
        raise BadRule("body must be a string (use json for an object)")
    delay = spec.get("delay", 0) or 0
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise BadRule("delay must be a non-negative number of seconds")
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict):
        raise BadRule("headers must be an object")
    headers = {str(k): str(v) for k, v in headers.items()}
    retry_after = spec.get("retry_after")
    if retry_after is not None:
        retry_after = str(retry_after)
    for k, v in list(headers.items()) + [("Retry-After", retry_after or "")]:
        if re.search(r"[\r\n]", k + v) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", k):
            raise BadRule("invalid header %r" % k)
    mode = spec.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRule("mode must be one of %s" % ", ".join(MODES))
    message = spec.get("message")
    if message is not None and not isinstance(message, str):
        raise BadRule("message must be a string")
    refuse = spec.get("refuse") or []
    if not isinstance(refuse, list) or not all(isinstance(a, str) for a in refuse):
        raise BadRule("refuse must be a list of addresses")
    return {"refuse": [a.lower() for a in refuse],
            "id": rule_id, "path": path, "method": method, "times": times,
            "remaining": times, "hits": 0, "status": status, "body": body,
            "json": spec.get("json"), "headers": headers, "delay": delay,
            "retry_after": retry_after, "mode": mode, "message": message}


def rule_matches(rule, method, path):
    if rule["remaining"] is not None and rule["remaining"] <= 0:
        return False
    if rule["method"] and rule["method"] != method:
        return False
    pattern = rule["path"]
    if pattern is None or pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


# ------------------------------------------------------------------ state

class State:
    def __init__(self, api_keys, webhook_secret, log_path, webhook_url=None,
                 webhook_attempts=6, webhook_backoff=0.5, webhook_concurrency=4):
        self.initial_keys = list(api_keys)
        self.api_keys = list(api_keys)
        self.webhook_secret = webhook_secret
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sender = WebhookSender(webhook_url, webhook_secret, webhook_attempts,
                                    webhook_backoff, webhook_concurrency, self.stop)
        self.log_file = open(log_path, "a", encoding="utf-8") if log_path else None
        self.log_lock = threading.Lock()
        self.generation = 0
        self.rule_seq = 0
        self.rules = []
        self.scheduled = {}
        self.sched_seq = 0
        self._clear_requests()

    def _clear_requests(self):
        self.generation += 1
        self.requests = []
        self.seq = 0
        self.conn_seq = 0
        self.open_conns = 0
        self.by_status = {}
        self.sent = {}

    def clear_requests(self):
        with self.lock:
            self._clear_requests()

    def reset(self):
        with self.lock:
            self.api_keys = list(self.initial_keys)
            self.rules = []
            self.scheduled = {}
            self._clear_requests()
        self.sender.reset()

    # connections and recording
    def record(self, handler, method, path, headers, body, parsed):
        with self.lock:
            if handler.conn_gen != self.generation:
                self.conn_seq += 1
                self.open_conns += 1
                handler.conn_id = self.conn_seq
                handler.conn_gen = self.generation
            self.seq += 1
            rec = {"seq": self.seq, "time": time.time(), "method": method,
                   "path": path, "headers": headers, "body": body,
                   "json": parsed, "conn": handler.conn_id, "status": None}
            self.requests.append(rec)
            return rec, self.generation

    def finish(self, rec, gen, status):
        with self.lock:
            rec["status"] = status
            if gen == self.generation:
                key = "hang" if status is None else str(status)
                self.by_status[key] = self.by_status.get(key, 0) + 1
            line = json.dumps(rec) if self.log_file else None
        if line is not None:
            with self.log_lock:
                if self.log_file:
                    self.log_file.write(line + "\n")
                    self.log_file.flush()

    def connection_closed(self, handler):
        with self.lock:
            if handler.conn_gen == self.generation:
                self.open_conns -= 1
            handler.conn_gen = None

    def get_requests(self, since, last):
        with self.lock:
            out = [dict(r) for r in self.requests if r["seq"] > since]
        if last is not None:
            out = out[-last:] if last > 0 else []
        return out

    def stats(self):
        with self.lock:
            return {"requests": self.seq, "connections": self.conn_seq,
                    "open_connections": self.open_conns,
                    "by_status": dict(self.by_status)}

    # rules
    def add_rules(self, specs):
        with self.lock:
            new = []
            for spec in specs:
                new.append(normalize_rule(spec, self.rule_seq + len(new) + 1))
            self.rule_seq += len(new)
            self.rules.extend(new)
            return [dict(r) for r in self.rules]

    def list_rules(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def clear_rules(self):
        with self.lock:
            self.rules = []

    def take_rule(self, method, path):
        with self.lock:
            for rule in self.rules:
                if rule_matches(rule, method, path):
                    if rule["remaining"] is not None:
                        rule["remaining"] -= 1
                    rule["hits"] += 1
                    return dict(rule)
        return None

    # mail
    def accept(self, msg):
        with self.lock:
            if msg["scheduled_at"] is not None:
                self.sched_seq += 1
                old = self.scheduled.get(msg["reference_id"])
                self.scheduled[msg["reference_id"]] = {
                    "order": old["order"] if old else self.sched_seq,
                    "ts": msg["scheduled_at"],
                    "domain": msg["from"][0].rsplit("@", 1)[1].lower(),
                    "item": {"reference_id": msg["reference_id"],
                             "from": format_address(msg["from"]),
                             "recipients": [format_address(a) for a in msg["to"]],
                             "subject": msg["subject"],
                             "scheduled_at": rfc3339(msg["scheduled_at"]),
                             "tags": msg["tags"], "headers": msg["headers"]}}
            elif msg["reference_id"] not in self.sent:
                sent = self.sent[msg["reference_id"]] = {
                    "reference_id": msg["reference_id"],
                    "recipients": msg["recipients"], "tags": msg["tags"],
                    "accepted_at": int(time.time())}
                self.sender.enqueue(webhook_events(sent))

    def list_scheduled(self, domain=None):
        with self.lock:
            entries = sorted(self.scheduled.values(), key=lambda e: (e["ts"], e["order"]))
            return [dict(e["item"]) for e in entries
                    if domain is None or e["domain"] == domain.lower()]

    def delete_scheduled(self, ref):
        with self.lock:
            return self.scheduled.pop(ref, None) is not None

    def webhooks(self, secret):
        with self.lock:
            msgs = [dict(m) for m in self.sent.values()]
        out = []
        for m in msgs:
            for ev in webhook_events(m):
                body = event_body(ev)
                out.append({"body": body.decode("utf-8"), "signature": sign(secret, body)})
        return out


def webhook_events(msg):
    ref = msg["reference_id"]
    base = msg["accepted_at"]
    events = []

    def add(event_type, offset, data):
        event_id = hashlib.sha256(
            ("%s|%s|%d" % (ref, event_type, len(events))).encode()).hexdigest()[:48]
        event_time = base + offset
        millis = int(event_id[:6], 16) % 1000
        inserted = dt.datetime.fromtimestamp(event_time, dt.timezone.utc)
        events.append({
            "domain_id": WEBHOOK_DOMAIN_ID, "user_id": WEBHOOK_USER_ID,
            "event_id": event_id, "event_time": event_time,
            "event_type": event_type,
            "inserted_at": inserted.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % millis,
            "message_id": "<%s@mock.maileroo>" % ref,
            "message_reference_id": ref, "tags": msg["tags"],
            "event_data": data})

    for i, addr in enumerate(msg["recipients"]):
        local = addr.split("@", 1)[0].lower()
        ip = "203.0.113.%d" % (10 + i % 200)
        if local.startswith("bounce"):
            add("failed", 3 + i, {"to": addr, "reason": BOUNCE_REASON})
            continue
        add("delivered", 2 + i, {"to": addr})
        if local.startswith("complain"):
            add("complained", 600 + i, {"to": addr})
            continue
        add("opened", 60 + i, {"ip": ip, "user_agent": UA_DESKTOP})
        add("opened", 3600 + i, {"ip": "198.51.100.%d" % (20 + i % 200),
                                 "user_agent": UA_MOBILE})
        add("clicked", 120 + i, {"ip": ip, "original_url": CLICK_URL,
                                 "user_agent": UA_DESKTOP})
    return events


def sign(secret, body):
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def event_body(ev):
    return json.dumps(ev, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_webhook_url(url):
    if url is None:
        return None
    if not isinstance(url, str):
        raise BadRule("url must be a string or null")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRule("url must be an http:// or https:// URL")
    return url


class WebhookSender:
    """Delivers webhook events to a URL the way Maileroo does.

    enqueue() only pushes onto a heap ordered by due time, so the API thread
    that accepted the mail never waits; a few daemon threads take events
    whose time has come, sign and POST them one per request over kept-alive
    connections, and put a failed one back with a doubled delay until
    max_attempts deliveries have been tried.  reset() drops what is queued
    (a generation number makes in-flight events of the old one vanish).
    """

    def __init__(self, url, secret, max_attempts, backoff, concurrency, stop):
        self.defaults = (url, secret, max_attempts, backoff)
        self.url, self.secret, self.max_attempts, self.backoff = self.defaults
        self.concurrency = max(1, concurrency)
        self.stop = stop
        self.cond = threading.Condition()
        self.threads = []
        self.seq = 0
        self._clear()

    def _clear(self):
        self.generation = getattr(self, "generation", 0) + 1
        self.heap = []
        self.in_flight = 0
        self.log = []
        self.log_seq = 0
        self.counts = {"delivered": 0, "gave_up": 0, "attempts": 0}

    def reset(self):
        with self.cond:
            self._clear()
            self.url, self.secret, self.max_attempts, self.backoff = self.defaults
            self.cond.notify_all()

    def configure(self, spec):
        if not isinstance(spec, dict):
            raise BadRule("the body must be a JSON object")
        unknown = set(spec) - {"url", "secret", "max_attempts", "backoff"}
        if unknown:
            raise BadRule("unknown keys: %s" % ", ".join(sorted(unknown)))
        url = check_webhook_url(spec["url"]) if "url" in spec else self.url
        secret = spec.get("secret", self.secret)
        if not isinstance(secret, str):
            raise BadRule("secret must be a string")
        attempts = spec.get("max_attempts", self.max_attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise BadRule("max_attempts must be a positive integer")
        backoff = spec.get("backoff", self.backoff)
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
            raise BadRule("backoff must be a non-negative number of seconds")
        with self.cond:
            self.url, self.secret = url, secret
            self.max_attempts, self.backoff = attempts, float(backoff)
        return self.status()

    def status(self):
        with self.cond:
            return {"url": self.url, "max_attempts": self.max_attempts,
                    "backoff": self.backoff, "concurrency": self.concurrency,
                    "queued": len(self.heap) + self.in_flight, **self.counts}

    def deliveries(self, since):
        with self.cond:
            return [dict(r) for r in self.log if r["seq"] > since]

    def enqueue(self, events):
        """Queue the events of one accepted message (called under State.lock)."""
        with self.cond:
            if self.url is None:
                return
            if not self.threads:
                for i in range(self.concurrency):
                    t = threading.Thread(target=self._run, name="webhook-%d" % i, daemon=True)
                    t.start()
                    self.threads.append(t)
            now = time.monotonic()
            for ev in events:
                self.seq += 1
                item = {"event": ev, "attempt": 0, "generation": self.generation}
                heapq.heappush(self.heap, (now, self.seq, item))
            self.cond.notify_all()

    def _take(self):
        with self.cond:
            while not self.stop.is_set():
                if self.heap:
                    wait = self.heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, item = heapq.heappop(self.heap)
                        if item["generation"] != self.generation:
                            continue
                        self.in_flight += 1
                        return item, self.url, self.secret
                else:
                    wait = 0.5
                self.cond.wait(min(wait, 0.5))
        return None, None, None

    def _run(self):
        conns = {}
        while True:
            item, url, secret = self._take()
            if item is None:
                break
            try:
                status, error = self._post(conns, url, secret, item["event"])
            except Exception as e:  # never let one event kill the thread
                status, error = 0, "%s: %s" % (type(e).__name__, e)
            self._done(item, status, error)
        for c in conns.values():
            c.close()

    def _post(self, conns, url, secret, ev):
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        body = event_body(ev)
        headers = {"Content-Type": "application/json", "User-Agent": WEBHOOK_USER_AGENT,
                   "X-Maileroo-Signature": sign(secret, body)}
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        for retry in (0, 1):
            c = conns.get(key)
            fresh = c is None
            if fresh:
                cls = http.client.HTTPSConnection if parts.scheme == "https" \
                    else http.client.HTTPConnection
                c = conns[key] = cls(parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT)
            try:
                c.request("POST", target, body=body, headers=headers)
                r = c.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    conns.pop(key, None)
                return r.status, None
            except (OSError, http.client.HTTPException) as e:
                c.close()
                conns.pop(key, None)
                # A kept-alive connection the receiver closed: try a new one
                # at once, as HTTP clients do, without using up an attempt.
                if fresh or retry:
                    return 0, "%s: %s" % (type(e).__name__, e)
        return 0, "unreachable"

    def _done(self, item, status, error):
        ev = item["event"]
        with self.cond:
            if item["generation"] != self.generation:
                return  # reset() while it was in flight
            self.in_flight -= 1
            item["attempt"] += 1
            self.counts["attempts"] += 1
            if 200 <= status < 300:
                outcome = "delivered"
            elif item["attempt"] >= self.max_attempts:
                outcome = "gave_up"
            else:
                outcome = "retry"
            if outcome != "retry":
                self.counts[outcome] += 1
            self.log_seq += 1
            self.log.append({"seq": self.log_seq, "time": time.time(),
                             "event_id": ev["event_id"], "event_type": ev["event_type"],
                             "message_reference_id": ev["message_reference_id"],
                             "attempt": item["attempt"], "status": status,
                             "error": error, "outcome": outcome})
            if outcome == "retry":
                delay = min(WEBHOOK_MAX_BACKOFF, self.backoff * 2 ** (item["attempt"] - 1))
                self.seq += 1
                heapq.heappush(self.heap, (time.monotonic() + delay, self.seq, item))
            self.cond.notify_all()


# ---------------------------------------------------------------- handler

class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "maileroo-mock"
    sys_version = ""

    def setup(self):
        super().setup()
        self.conn_id = None
        self.conn_gen = None
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.state.connection_closed(self)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    @property
    def state(self):
        return self.server.state

    # -- plumbing
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise BodyError(400, "Incomplete chunked body.")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BodyError(400, "Malformed chunked body.")
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise BodyError(413, "The request body is too large.")
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BodyError(400, "Incomplete chunked body.")
                chunks.append(data)
                self.rfile.readline(8)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BodyError(400, "Invalid Content-Length.")
        if n < 0:
            raise BodyError(400, "Invalid Content-Length.")
        if n > MAX_BODY:
            raise BodyError(413, "The request body is too large.")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BodyError(400, "Incomplete request body.")
        return data

    def send(self, status, body, content_type="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if status < 200 or status in (204, 304):
            body = b""
        phrase = status_phrase(status) or "Unknown"
        hdrs = [("Server", self.server_version), ("Date", self.date_time_string()),
                ("Content-Type", content_type)]
        for k, v in (headers or {}).items():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            hdrs = [(hk, hv) for hk, hv in hdrs if hk.lower() != k.lower()]
            hdrs.append((k, v))
        hdrs.append(("Content-Length", str(len(body))))
        if self.close_connection:
            hdrs.append(("Connection", "close"))
        elif self.request_version == "HTTP/1.0":
            hdrs.append(("Connection", "keep-alive"))
        head = "%s %d %s\r\n" % (self.protocol_version, status, phrase)
        head += "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
        self.wfile.write(head.encode("latin-1", "replace") + body)
        self.wfile.flush()
        self.log_request(status, len(body))

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def dispatch(self):
        try:
            url = urllib.parse.urlsplit(self.path)
            path = url.path
            if path == MOCK_PREFIX or path.startswith(MOCK_PREFIX + "/"):
                self.control(url)
            elif path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                self.api(url)
            else:
                try:
                    self.read_body()
                except BodyError:
                    self.close_connection = True
                self.send(404, envelope(False, MSG_NOT_FOUND))
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send(500, envelope(False, "Internal mock error."))
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = dispatch

    # -- API
    def api(self, url):
        method = self.command
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            if k == "host":
                continue
            headers[k] = headers[k] + ", " + v if k in headers else v
        try:
            raw = self.read_body()
            body_error = None
        except BodyError as e:
            raw, body_error = b"", e
            self.close_connection = True
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except ValueError:
            parsed = None
        rec, gen = self.state.record(self, method, self.path, headers, text, parsed)

        def answer(status, body, content_type="application/json", more=None):
            # The status is recorded before the answer goes out, so that a
            # client that reads /_mock/requests right after sees it.
            self.state.finish(rec, gen, status)
            self.send(status, body, content_type, more)

        if body_error is not None:
            return answer(body_error.status, envelope(False, str(body_error)))

        rule = self.state.take_rule(method, url.path)
        extra = {}
        if rule:
            extra = dict(rule["headers"])
            if rule["retry_after"] is not None:
                extra["Retry-After"] = rule["retry_after"]
            if rule["delay"]:
                self.state.stop.wait(rule["delay"])
            mode = rule["mode"]
            status = rule["status"]
            if mode == "hang":
                self.state.finish(rec, gen, None)
                return self.hang()
            if mode == "drop":
                self.state.finish(rec, gen, 0)
                return self.drop()
            if mode == "malformed":
                return answer(status or 200, MALFORMED_BODY, more=extra)
            if mode == "nonjson":
                return answer(status or 502, HTML_502, "text/html; charset=utf-8", extra)
            if mode == "success_false":
                msg = rule["message"] or "The email could not be processed."
                return answer(status or 200, envelope(False, msg), more=extra)
            if mode is None and (status is not None or rule["body"] is not None
                                 or rule["json"] is not None):
                status = status or 200
                if rule["body"] is not None:
                    body = rule["body"]
                elif rule["json"] is not None:
                    body = json.dumps(rule["json"])
                else:
                    body = envelope(status < 400, rule["message"] or default_message(status))
                return answer(status, body, more=extra)

        status, body, more = self.process(method, url, parsed,
                                          set(rule["refuse"]) if rule else set())
        more.update(extra)
        answer(status, body, more=more)

    def hang(self):
        """Answer nothing until the client goes away or the server stops."""
        self.close_connection = True
        sock = self.connection
        while not self.state.stop.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable and not sock.recv(65536):
                    break
            except (OSError, ValueError):
                break

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        parts = auth.split(None, 1)
        xkey = self.headers.get("X-Api-Key")
        for key in list(self.state.api_keys):
            if len(parts) == 2 and parts[0].lower() == "bearer" and \
                    hmac.compare_digest(parts[1].strip().encode(), key.encode()):
                return True
            if xkey is not None and hmac.compare_digest(xkey.strip().encode(), key.encode()):
                return True
        return False

    def process(self, method, url, parsed, refuse=frozenset()):
        """Normal Maileroo behaviour: (status, body, extra headers)."""
        if not self.authorized():
            return 401, envelope(False, MSG_AUTH), {}
        path = url.path.rstrip("/") or "/"
        sub = path[len(API_PREFIX):]
        routes = {"/emails": "POST", "/emails/template": "POST",
                  "/emails/bulk": "POST", "/emails/scheduled": "GET"}
        if sub in routes or sub.startswith("/emails/scheduled/"):
            allowed = routes.get(sub, "DELETE")
            if method != allowed:
                return 405, envelope(False, "The %s method is not supported for this route."
                                     % method), {"Allow": allowed}
        else:
            return 404, envelope(False, MSG_NOT_FOUND), {}
        try:
            if sub in ("/emails", "/emails/template"):
                msg = validate_send(parsed, sub == "/emails/template")
                self.state.accept(msg)
                return 200, envelope(True, MSG_QUEUED,
                                     {"reference_id": msg["reference_id"]}), {}
            if sub == "/emails/bulk":
                msgs = validate_bulk(parsed)
                msgs = [m for m in msgs
                        if not any(a.lower() in refuse for a in m["recipients"])]
                for m in msgs:
                    self.state.accept(m)
                return 200, envelope(True, MSG_BULK_QUEUED,
                                     {"reference_ids": [m["reference_id"] for m in msgs]}), {}
            if sub == "/emails/scheduled":
                return self.list_scheduled(url)
            ref = urllib.parse.unquote(sub[len("/emails/scheduled/"):])
            if self.state.delete_scheduled(ref):
                return 200, envelope(True, "The scheduled email has been deleted."), {}
            return 404, envelope(False, MSG_SCHED_NOT_FOUND), {}
        except ValidationError as e:
            return 400, envelope(False, str(e)), {}

    def list_scheduled(self, url):
        q = urllib.parse.parse_qs(url.query)

        def intarg(name, default):
            vals = q.get(name)
            if not vals or vals[-1] == "":
                return default
            try:
                return int(vals[-1])
            except ValueError:
                raise ValidationError("The %s must be an integer." % name)

        page = intarg("page", 1)
        per_page = intarg("per_page", 10)
        if page < 1:
            raise ValidationError("The page must be at least 1.")
        if per_page < 1 or per_page > 100:
            raise ValidationError("The per_page must be between 1 and 100.")
        domain = (q.get("domain") or [None])[-1] or None
        items = self.state.list_scheduled(domain)
        total = len(items)
        data = {"page": page, "per_page": per_page, "total_count": total,
                "total_pages": math.ceil(total / per_page),
                "results": items[(page - 1) * per_page: page * per_page]}
        return 200, envelope(True, "The scheduled emails have been retrieved.", data), {}

    # -- control
    def control(self, url):
        try:
            raw = self.read_body()
        except BodyError as e:
            self.close_connection = True
            self.send(e.status, {"ok": False, "error": str(e)})
            return
        what = url.path[len(MOCK_PREFIX):].rstrip("/")
        q = urllib.parse.parse_qs(url.query)
        method = self.command
        st = self.state

        def qint(name):
            v = q.get(name)
            return int(v[-1]) if v and v[-1] != "" else None

        try:
            if what == "/health" and method == "GET":
                return self.send(200, {"ok": True})
            if what == "/requests" and method == "GET":
                return self.send(200, st.get_requests(qint("since") or 0, qint("last")))
            if what == "/requests" and method == "DELETE":
                st.clear_requests()
                return self.send(200, {"ok": True})
            if what == "/stats" and method == "GET":
                return self.send(200, st.stats())
            if what == "/rules" and method == "GET":
                return self.send(200, st.list_rules())
            if what == "/rules" and method == "POST":
                try:
                    spec = json.loads(raw)
                except ValueError:
                    raise BadRule("the body must be a JSON object or a list of objects")
                specs = spec if isinstance(spec, list) else [spec]
                return self.send(200, st.add_rules(specs))
            if what == "/rules" and method == "DELETE":
                st.clear_rules()
                return self.send(200, {"ok": True})
            if what == "/keys" and method == "GET":
                return self.send(200, {"keys": list(st.api_keys)})
            if what == "/keys" and method == "POST":
                try:
                    keys = json.loads(raw).get("keys")
                except (ValueError, AttributeError):
                    keys = None
                if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                    raise BadRule('the body must be {"keys": ["key", ...]}')
                st.api_keys = list(keys)
                return self.send(200, {"keys": list(st.api_keys)})
            if what == "/reset" and method == "POST":
                st.reset()
                return self.send(200, {"ok": True})
            if what == "/scheduled" and method == "GET":
                return self.send(200, st.list_scheduled())
            if what == "/webhooks" and method == "GET":
                secret = (q.get("secret") or [st.webhook_secret])[-1]
                return self.send(200, st.webhooks(secret))
            if what == "/webhook" and method == "GET":
                return self.send(200, st.sender.status())
            if what == "/webhook" and method == "POST":
                try:
                    spec = json.loads(raw)
                except ValueError:
                    raise BadRule("the body must be a JSON object")
                return self.send(200, st.sender.configure(spec))
            if what == "/deliveries" and method == "GET":
                return self.send(200, st.sender.deliveries(qint("since") or 0))
        except BadRule as e:
            return self.send(400, {"ok": False, "error": str(e)})
        except ValueError as e:
            return self.send(400, {"ok": False, "error": "bad query: %s" % e})
        self.send(404, {"ok": False, "error": "no such control endpoint: %s %s"
                        % (method, url.path)})


# RFC 9110's reason phrases, which Python adopted only in 3.13: the mock
# answers the same on every Python.
RFC9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def status_phrase(status):
    """The reason phrase of an HTTP status, or None for an unknown one."""
    if status in RFC9110_PHRASES:
        return RFC9110_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def default_message(status):
    if status == 429:
        return "Too many requests. Please try again later."
    if status >= 500:
        return "An internal server error occurred. Please try again later."
    if status < 400:
        return MSG_QUEUED
    phrase = status_phrase(status)
    return phrase + "." if phrase is not None else "Error."


# ----------------------------------------------------------------- server

class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def loopback_host(host):
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mock Maileroo API server for tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--api-key", action="append")
    ap.add_argument("--webhook-secret", default="whsec-test")
    ap.add_argument("--webhook-url")
    ap.add_argument("--webhook-attempts", type=int, default=6)
    ap.add_argument("--webhook-backoff", type=float, default=0.5)
    ap.add_argument("--webhook-concurrency", type=int, default=4)
    ap.add_argument("--log")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    host = loopback_host(args.host)
    if host is None:
        print("maileroo_mock: refusing to listen on %r: only loopback addresses "
              "are allowed" % args.host, file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("maileroo_mock: invalid port %d" % args.port, file=sys.stderr)
        return 2

    cls = Server
    if ":" in host:
        cls = type("Server6", (Server,), {"address_family": socket.AF_INET6})
    try:
        check_webhook_url(args.webhook_url)
    except BadRule as e:
        print("maileroo_mock: --webhook-url: %s" % e, file=sys.stderr)
        return 2
    if args.webhook_attempts < 1 or args.webhook_backoff < 0 or args.webhook_concurrency < 1:
        print("maileroo_mock: --webhook-attempts and --webhook-concurrency must be "
              "positive, --webhook-backoff not negative", file=sys.stderr)
        return 2
    state = State(args.api_key or ["test-key"], args.webhook_secret, args.log, args.webhook_url,
                  args.webhook_attempts, args.webhook_backoff, args.webhook_concurrency)
    try:
        server = cls((host, args.port), Handler)
    except OSError as e:
        print("maileroo_mock: cannot listen on %s:%d: %s" % (host, args.port, e),
              file=sys.stderr)
        return 1
    server.state = state
    server.verbose = args.verbose
    port = server.server_address[1]

    def stop(signum, frame):
        state.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    if args.port_file:
        write_port_file(args.port_file, port)
    shown = "[%s]" % host if ":" in host else host
    print("maileroo mock listening on http://%s:%d%s" % (shown, port, API_PREFIX),
          flush=True)
    while not state.stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    if state.log_file:
        with state.log_lock:
            state.log_file.close()
            state.log_file = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
