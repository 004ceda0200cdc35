"""Webhook push: one signed JSON POST per message to the operator's push gateway."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from perkflow.channels.rules import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Message,
    Receipt,
    SendResult,
    sign_body,
    webhook_payload,
    webhook_retryable,
)
from perkflow.kit import clock

log = logging.getLogger("perkflow.channels.webhook")


class WebhookChannel:
    """POSTs each message with an idempotency key and an HMAC-SHA256 signature; 2xx is delivery."""

    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self.timeout_s = timeout_s
        self._own_client = client is None
        self._client = client or httpx.Client(follow_redirects=False)

    def _post(self, message: Message) -> SendResult:
        body = json.dumps(webhook_payload(message), ensure_ascii=False, separators=(",", ":"))
        data = body.encode()
        headers = {
            "content-type": "application/json; charset=utf-8",
            IDEMPOTENCY_HEADER: message.key,
            SIGNATURE_HEADER: sign_body(self._secret, data, timestamp=int(clock.now().timestamp())),
        }
        try:
            response = self._client.post(
                self.url, content=data, headers=headers, timeout=self.timeout_s
            )
        except httpx.TimeoutException:
            return SendResult(
                contact_id=message.contact_id,
                ok=False,
                error=f"timed out after {self.timeout_s:g} s",
                retryable=True,
            )
        except httpx.HTTPError as exc:
            return SendResult(
                contact_id=message.contact_id,
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:300],
                retryable=True,
            )
        if 200 <= response.status_code < 300:
            return SendResult(
                contact_id=message.contact_id,
                ok=True,
                message_ref=message.key,
                delivered=True,
            )
        return SendResult(
            contact_id=message.contact_id,
            ok=False,
            error=f"HTTP {response.status_code}: {response.text[:200]}",
            retryable=webhook_retryable(response.status_code),
        )

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        """One POST per message, in order; after a timeout or connection error the rest wait."""
        results: list[SendResult] = []
        for index, message in enumerate(messages):
            result = self._post(message)
            results.append(result)
            if not result.ok and result.error and not result.error.startswith("HTTP "):
                # The gateway is unreachable: do not spend a timeout on every further message.
                results.extend(
                    SendResult(contact_id=m.contact_id, ok=False, error=result.error)
                    for m in messages[index + 1 :]
                )
                break
        failed = sum(1 for r in results if not r.ok)
        if failed:
            log.warning("webhook: %d of %d messages not accepted", failed, len(results))
        return results

    def receipts(self) -> list[Receipt]:
        """None: a 2xx reply is the delivery."""
        return []

    def close(self) -> None:
        """Close the connection pool (when this channel made it)."""
        if self._own_client:
            self._client.close()
