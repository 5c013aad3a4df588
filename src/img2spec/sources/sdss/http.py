"""Polite, persistent HTTP GETs: rate limit, Retry-After, back-off with jitter, capped tries.

One `Fetcher` is shared by all worker threads of a stage; each thread gets its own
`requests.Session` (sessions are not thread-safe). A response body is handed to a
`check` callable before it counts as a success, so a truncated or malformed body is
retried like a 5xx instead of being written.

`read_timeout_s` bounds each wait for bytes; a server that trickles a byte just
inside it could hold a request for ever, so the body is streamed and each try
also has a total deadline (`total_timeout_s`, checked between reads: a try ends
at most one read wait after it). An expired deadline is retried like a timeout.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import requests
import urllib3.exceptions

from ...config.sdss import HTTPParams

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth another try; any other non-2xx is final (404: the file does not exist)."""
READ_CHUNK = 1 << 16
"""Bytes asked for per read of a streamed body (a read returns whatever has arrived)."""


class DeadlineExceeded(requests.Timeout):
    """A try took longer than `total_timeout_s` in all (connect, headers and body)."""


def read_body(resp: requests.Response, deadline: float) -> bytes:
    """The whole (decoded) body of a `stream=True` response, or DeadlineExceeded at `deadline` (monotonic).

    `read1` returns as soon as any bytes arrive, so the deadline is checked after
    every arrival however slowly the server sends.
    """
    parts: list[bytes] = []
    try:
        while True:
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"total deadline passed after {sum(map(len, parts))} bytes")
            chunk = resp.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
    except DeadlineExceeded:
        raise  # a requests.Timeout, hence an OSError: keep it from the clause below
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(str(exc)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # read through resp.raw, urllib3's errors arrive unwrapped: a short body, a reset
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc


class FetchError(RuntimeError):
    """A request failed for good. `status` is the last HTTP status (0: no response)."""

    def __init__(self, url: str, status: int, reason: str):
        super().__init__(f"{url}: {reason}" + (f" (HTTP {status})" if status else ""))
        self.url, self.status, self.reason = url, status, reason


class BadContent(ValueError):
    """Raised by a `check` callable: the body arrived but is not what was asked for."""


class RateLimiter:
    """Start at most `rate` requests per second over all threads (evenly spaced slots)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date, RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Fetcher:
    """GET with retries; thread-safe; one requests.Session per thread."""

    def __init__(self, policy: HTTPParams, sleep: Callable[[float], None] = time.sleep, seed: int | None = None):
        self.policy = policy
        self.limiter = RateLimiter(policy.rate_per_s)
        self.stats = Stats()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._sleep = sleep
        self._rng = random.Random(seed)

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = self.policy.user_agent
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential back-off before retry number `attempt` (0-based)."""
        cap = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2**attempt)
        with self._lock:
            return self._rng.uniform(0, cap)

    def get(
        self,
        url: str,
        params: Mapping[str, object] | None = None,
        check: Callable[[bytes], object] | None = None,
    ):
        """GET `url`; return `check(body)` (or the body). Raises FetchError after capped tries."""
        p = self.policy
        last_status, last_reason = 0, "no attempt"
        for attempt in range(p.max_tries):
            wait: float | None = None
            self.limiter.wait()
            self.count("requests")
            resp = None
            try:
                deadline = time.monotonic() + p.total_timeout_s
                resp = self.session().get(url, params=params, timeout=(p.connect_timeout_s, p.read_timeout_s),
                                          stream=True)
                body = read_body(resp, deadline)
            except DeadlineExceeded as exc:
                last_status, last_reason = 0, f"deadline: no complete answer within total_timeout_s={p.total_timeout_s} ({exc})"
            except requests.Timeout as exc:
                last_status, last_reason = 0, f"timeout ({type(exc).__name__})"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                # urllib3 raises these for a body shorter than its Content-Length, too.
                last_status, last_reason = 0, f"connection error ({type(exc).__name__}: {exc})"
            else:
                last_status = resp.status_code
                if 200 <= resp.status_code < 300:
                    expected = resp.headers.get("Content-Length")
                    if expected is not None and expected.isdigit() and "Content-Encoding" not in resp.headers \
                            and int(expected) != len(body):
                        last_reason = f"truncated body ({len(body)} of {expected} bytes)"
                    else:
                        try:
                            return check(body) if check else body
                        except BadContent as exc:
                            last_reason = f"bad content: {exc}"
                elif resp.status_code in RETRY_STATUS:
                    last_reason = f"HTTP {resp.status_code}"
                    if resp.status_code in (429, 503):
                        self.count("throttled")
                        wait = parse_retry_after(resp.headers.get("Retry-After"))
                        if wait is not None:
                            wait = min(wait, p.max_retry_after_s)
                else:
                    raise FetchError(resp.url or url, resp.status_code, f"HTTP {resp.status_code} {resp.reason}")
            finally:
                if resp is not None:
                    # a body read to the end has already gone back to the pool (keep-alive);
                    # an unfinished one (deadline, error) closes its connection here
                    resp.close()
            if attempt + 1 < p.max_tries:
                self.count("retries")
                delay = wait if wait is not None else self.backoff(attempt)
                log.debug("retry %d of %s after %.2fs: %s", attempt + 1, url, delay, last_reason)
                self._sleep(delay)
        raise FetchError(url, last_status, f"gave up after {p.max_tries} tries: {last_reason}")
