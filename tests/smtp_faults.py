"""A real SMTP server (aiosmtpd, free local port) that misbehaves on request, the way relays do.

Program it per recipient, then point any SMTP client at ``server.url``::

    def test_something(faulty_smtp):
        faulty_smtp.at_rcpt("a@example.nl", "451 4.3.0 Try again later", times=1)
        faulty_smtp.after_data("b@example.nl", "554 5.7.1 Rejected by policy")
        faulty_smtp.disconnect_after_data("c@example.nl", times=1)
        faulty_smtp.slow_after_data("d@example.nl", seconds=3)
        faulty_smtp.greet_with("421 4.3.2 Service not available", times=2)
        ...                                    # deliver to faulty_smtp.url
        assert faulty_smtp.wait_for(2, timeout=5)
        assert faulty_smtp.message_ids() == ["<1@x>", "<1@x>"]   # a duplicate copy

Every fault happens on the wire:

* ``greet_with``: the connection is greeted with that reply instead of ``220`` and closed
  (smtplib raises ``SMTPConnectError`` from ``SMTP(host, port)``). Whole server, not per recipient.
* ``at_rcpt``: that reply to ``RCPT TO:<address>``; the recipient is not added.
* ``after_data``: the whole message is read, then that reply to the final ``.``; not recorded.
* ``disconnect_after_data``: the whole message is read and recorded in ``received`` (the relay
  has it), then the connection is closed (FIN) without any reply: an unknown outcome for the client.
* ``slow_after_data``: the message is read and recorded, then ``250`` is sent only after
  ``seconds`` (``asyncio.sleep``: other connections are served meanwhile).
* ``hold_at_rcpt``: ``RCPT TO:<address>`` is answered only once the test releases it (the
  returned ``Hold``'s ``reached`` is set when the command arrives; set its ``release``), so a
  test can act while a message is in the middle of being handed over.
* A ``421`` reply at RCPT or after DATA closes the connection after it, as RFC 5321 says.

``times=N`` limits a rule to the first N times it applies (``times=1``: misbehave once, then
behave); ``times=None`` means always. Several rules for one address and stage are used in the
order they were added, so ``at_rcpt(a, "451 ...", times=1); at_rcpt(a, "550 ...")`` is
"temporary once, then permanent". After DATA the first recipient (in RCPT order) with a live rule
decides. Addresses compare case-insensitively. Anything not programmed is accepted with ``250``
and recorded.

The fixture ``faulty_smtp`` gives each test a started server and stops it afterwards; import it
into a test module (``from smtp_faults import faulty_smtp``) or into conftest.py.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import NamedTuple

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

__all__ = ["FaultySMTPServer", "Hold", "Received", "faulty_smtp"]


class Received(NamedTuple):
    """One message the server took in: the accepted recipients and the raw message bytes."""

    recipients: tuple[str, ...]
    data: bytes


@dataclass
class Hold:
    """A RCPT held by the server: `reached` when the command arrived; the reply waits for `release`."""

    address: str
    reached: threading.Event
    release: threading.Event


@dataclass
class _Rule:
    stage: str                    # "greeting" | "rcpt" | "data"
    address: str | None           # lower-cased recipient; None for the greeting
    reply: str | None             # None: close without replying
    times: int | None             # None: unlimited
    delay: float = 0.0            # seconds to wait before replying
    record: bool = False          # for the DATA stage: keep the message in `received`

    def describe(self) -> str:
        what = {"greeting": "greeting", "rcpt": f"RCPT {self.address}", "data": f"DATA {self.address}"}
        action = "disconnect" if self.reply is None else repr(self.reply)
        if self.delay:
            action = f"after {self.delay}s {action}"
        return f"{what[self.stage]}: {action}, {self.times} time(s) left"


class _Hangup:
    """Returned by the handler instead of a reply string: reply (or not), then close."""

    def __init__(self, reply: str | None):
        self.reply = reply


def _code(reply: str) -> int:
    head = reply[:4]
    if len(reply) < 3 or not reply[:3].isdigit() or head[3:] not in ("", " ", "-"):
        raise ValueError(f"not an SMTP reply: {reply!r} (want e.g. '451 4.3.0 Try again later')")
    return int(reply[:3])


def _failure(reply: str) -> str:
    if not 400 <= _code(reply) < 600:
        raise ValueError(f"a fault needs a 4xx or 5xx reply, not {reply!r}")
    return reply


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP protocol with two hooks aiosmtpd does not offer: the greeting and hang-ups."""

    async def _handle_client(self) -> None:
        # aiosmtpd has no hook for the 220 greeting; it is the first push of _handle_client.
        reply = self.event_handler.take_greeting()
        if reply is None:
            await super()._handle_client()
            return
        await self.push(reply)
        self.transport.close()  # flushes the reply, then FIN; connection_lost ends the session

    async def push(self, status) -> None:
        # Handler hooks return their reply and SMTP.smtp_RCPT/smtp_DATA push it as-is,
        # so a _Hangup passes through here; everything else is ordinary.
        if isinstance(status, _Hangup):
            if status.reply is not None:
                await super().push(status.reply)
            self.transport.close()
            return
        await super().push(status)


class _Controller(Controller):
    def factory(self):
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


class FaultySMTPServer:
    """An aiosmtpd server on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        # Imported here, not at the top, so conftest.py itself can import this module.
        from conftest import free_port

        self.host = host
        self.port = port or free_port()
        self.received: list[Received] = []
        self._rules: list[_Rule] = []
        self._holds: dict[str, Hold] = {}
        self._changed = threading.Condition()
        self._armed = False       # the controller's own start-up probe connection gets a plain 220
        self._controller: _Controller | None = None

    # --- life cycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?timeout=5"

    def start(self) -> "FaultySMTPServer":
        # server_hostname: otherwise aiosmtpd calls socket.getfqdn() (DNS) for every connection.
        self._controller = _Controller(self, hostname=self.host, port=self.port,
                                       server_hostname="faulty-smtp.test")
        self._controller.start()  # connects once itself and reads the greeting
        self._armed = True
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "FaultySMTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- programming faults --------------------------------------------------------------

    def greet_with(self, reply: str, times: int | None = None) -> None:
        """Greet new connections with `reply` (e.g. "421 4.3.2 Try later") and close them."""
        self._add(_Rule("greeting", None, _failure(reply), times))

    def at_rcpt(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer RCPT TO:<address> with `reply` (4xx/5xx); a 421 also closes the connection."""
        self._add(_Rule("rcpt", address.lower(), _failure(reply), times))

    def after_data(self, address: str, reply: str, times: int | None = None) -> None:
        """Read the whole message, then answer it with `reply` (4xx/5xx); it is not recorded."""
        self._add(_Rule("data", address.lower(), _failure(reply), times))

    def disconnect_after_data(self, address: str, times: int | None = None) -> None:
        """Read and record the whole message, then close the connection without a reply."""
        self._add(_Rule("data", address.lower(), None, times, record=True))

    def slow_after_data(self, address: str, seconds: float, times: int | None = None) -> None:
        """Read and record the whole message, then wait `seconds` before replying 250."""
        self._add(_Rule("data", address.lower(), "250 OK", times, delay=seconds, record=True))

    def hold_at_rcpt(self, address: str) -> Hold:
        """Hold the reply to RCPT TO:<address> until `release` is set (at most 30 s), once."""
        hold = Hold(address.lower(), threading.Event(), threading.Event())
        with self._changed:
            self._holds[hold.address] = hold
        return hold

    def pending(self) -> list[str]:
        """Rules limited by `times` that have not been used up (a typo'd address shows here)."""
        with self._changed:
            return [rule.describe() for rule in self._rules if rule.times]

    def _add(self, rule: _Rule) -> None:
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self._changed:
            self._rules.append(rule)

    def _take(self, stage: str, addresses: list[str | None]) -> _Rule | None:
        """The rule that applies now, counting one use of it; None when none does."""
        with self._changed:
            for address in addresses:
                for rule in self._rules:
                    if rule.stage == stage and rule.address == address and rule.times != 0:
                        if rule.times is not None:
                            rule.times -= 1
                        return rule
        return None

    # --- what arrived --------------------------------------------------------------------

    def message_ids(self) -> list[str | None]:
        """The Message-ID of every received message, in arrival order, duplicates kept (None if absent)."""
        parser = BytesHeaderParser()
        ids = []
        for message in list(self.received):
            value = parser.parsebytes(message.data).get("Message-ID")
            ids.append(None if value is None else str(value).strip())
        return ids

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least `count` messages were received; False after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.received) >= count, timeout)

    def _record(self, envelope) -> None:
        with self._changed:
            self.received.append(Received(tuple(envelope.rcpt_tos), bytes(envelope.original_content)))
            self._changed.notify_all()

    # --- aiosmtpd handler hooks (run on the server's event loop thread) ------------------

    def take_greeting(self) -> str | None:
        if not self._armed:
            return None
        rule = self._take("greeting", [None])
        return None if rule is None else rule.reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._changed:
            hold = self._holds.pop(address.lower(), None)
        if hold is not None:
            hold.reached.set()
            # Waits in a thread, so the server's loop goes on serving other connections.
            await asyncio.get_running_loop().run_in_executor(None, hold.release.wait, 30)
        rule = self._take("rcpt", [address.lower()])
        if rule is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 OK"
        return _Hangup(rule.reply) if _code(rule.reply) == 421 else rule.reply

    async def handle_DATA(self, server, session, envelope):
        rule = self._take("data", [address.lower() for address in envelope.rcpt_tos])
        if rule is None:
            self._record(envelope)
            return "250 OK: queued"
        if rule.record:
            self._record(envelope)
        if rule.delay:
            await asyncio.sleep(rule.delay)  # cancelled if the client gives up and closes
        if rule.reply is None or _code(rule.reply) == 421:
            return _Hangup(rule.reply)
        return rule.reply


@pytest.fixture
def faulty_smtp():
    """A started FaultySMTPServer, stopped after the test."""
    server = FaultySMTPServer().start()
    yield server
    server.stop()
