"""E-mail over SMTP (stdlib smtplib): one connection per batch, replies classified per message."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from perkflow.channels.rules import Message, Receipt, SendResult, message_id, smtp_retryable
from perkflow.kit import clock

log = logging.getLogger("perkflow.channels.email")


def build_email(message: Message, *, sender: str) -> EmailMessage:
    """The e-mail for one message: UTF-8 subject and body, the contact's key as Message-ID."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.address
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(clock.now())
    mail["Message-ID"] = message_id(message)
    mail.set_content(message.body, charset="utf-8")
    return mail


def _reply_text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


class SmtpChannel:
    """E-mail through a relay; accepted means queued by the relay (there are no receipts)."""

    name = "email"

    def __init__(self, *, host: str, port: int, sender: str, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout_s = timeout_s

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        smtp.ehlo_or_helo_if_needed()
        return smtp

    def _send_one(self, smtp: smtplib.SMTP, message: Message) -> SendResult:
        """One message over an open connection; transport trouble is raised to the caller."""
        ref = message_id(message)
        try:
            mail = build_email(message, sender=self.sender)
        except (ValueError, TypeError) as exc:
            # A line break in a header, an unusable address: no retry can fix the message.
            return SendResult(
                contact_id=message.contact_id,
                ok=False,
                error=f"message cannot be sent: {exc}"[:300],
                retryable=False,
            )
        try:
            refused = smtp.send_message(mail)
        except smtplib.SMTPNotSupportedError as exc:
            # A non-ASCII address and a relay without SMTPUTF8: this message, not the relay.
            return SendResult(
                contact_id=message.contact_id, ok=False, error=str(exc)[:300], retryable=False
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return self._refused(message, int(code), _reply_text(text), stage="RCPT")
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            stage = "MAIL" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA"
            if exc.smtp_code == 421:
                raise smtplib.SMTPServerDisconnected("421 at " + stage) from exc
            return self._refused(message, exc.smtp_code, _reply_text(exc.smtp_error), stage=stage)
        if refused:  # only possible with several recipients; kept for completeness
            code, text = next(iter(refused.values()))
            return self._refused(message, int(code), _reply_text(text), stage="RCPT")
        return SendResult(contact_id=message.contact_id, ok=True, message_ref=ref)

    @staticmethod
    def _refused(message: Message, code: int, text: str, *, stage: str) -> SendResult:
        return SendResult(
            contact_id=message.contact_id,
            ok=False,
            error=f"{stage} {code} {text}"[:300],
            retryable=smtp_retryable(code),
        )

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        """Send each message over one connection; a lost relay leaves the rest retryable."""
        if not messages:
            return []
        results: list[SendResult] = []
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            problem = f"SMTP relay {self.host}:{self.port} unreachable: {type(exc).__name__}"
            log.warning("%s", problem)
            return [
                SendResult(contact_id=m.contact_id, ok=False, error=problem, retryable=True)
                for m in messages
            ]
        try:
            for index, message in enumerate(messages):
                try:
                    results.append(self._send_one(smtp, message))
                except (OSError, smtplib.SMTPException) as exc:
                    # 421 or a dropped connection: nothing more goes through this batch.
                    problem = f"SMTP relay lost: {type(exc).__name__}: {exc}"[:300]
                    log.warning("%s", problem)
                    results.extend(
                        SendResult(contact_id=m.contact_id, ok=False, error=problem, retryable=True)
                        for m in messages[index:]
                    )
                    break
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return results

    def receipts(self) -> list[Receipt]:
        """None: SMTP acceptance is all an operator relay confirms."""
        return []

    def close(self) -> None:
        """Nothing held between batches."""
