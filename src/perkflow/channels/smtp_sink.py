"""An SMTP sink: a real aiosmtpd server on loopback that records what it accepts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message, per recipient."""

    mail_from: str
    to: str
    subject: str
    body: str
    message_id: str


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(  # noqa: N802  (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.sink.outage == 421:
            return "421 4.3.2 Service not available, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.sink.outage is not None:
            return f"{self.sink.outage} 4.3.0 Try again later"
        if address.lower() in self.sink.rejected:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        raw = envelope.original_content or envelope.content
        mail = message_from_bytes(
            raw if isinstance(raw, bytes) else raw.encode(), policy=policy.default
        )
        assert isinstance(mail, EmailMessage)
        part = mail.get_body(preferencelist=("plain",))
        body = part.get_content() if part is not None else ""
        for to in envelope.rcpt_tos:
            self.sink._record(
                ReceivedMail(
                    mail_from=str(envelope.mail_from),
                    to=to,
                    subject=str(mail["Subject"] or ""),
                    body=str(body).replace("\r\n", "\n").rstrip("\n"),
                    message_id=str(mail["Message-ID"] or ""),
                )
            )
        return "250 OK queued"


class SmtpSink:
    """A loopback SMTP server: records mail; `outage` (421/451) or `rejected` recipients (550)."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        rejected: Iterable[str] = (),
        on_mail: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.rejected = {r.lower() for r in rejected}
        self.outage: int | None = None
        self.on_mail = on_mail
        self._lock = threading.Lock()
        self._mails: list[ReceivedMail] = []
        self._controller: Controller | None = None

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._mails.append(mail)
        if self.on_mail is not None:
            self.on_mail(mail)

    @property
    def mails(self) -> list[ReceivedMail]:
        """Everything accepted so far, one entry per recipient."""
        with self._lock:
            return list(self._mails)

    def wait_for(self, count: int, *, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """The mails once at least `count` arrived; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.mails
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.mails)} of {count} mails arrived")

    def start(self) -> SmtpSink:
        """Serve in aiosmtpd's own thread."""
        controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10.0
        )
        try:
            controller.start()
        except OSError:
            controller.stop(no_assert=True)  # a port in use leaves no loop thread behind
            raise
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop serving: connections are refused from now on."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
