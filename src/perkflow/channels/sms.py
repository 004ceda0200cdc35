"""SMS over SMPP 3.4 (smpplib): one bound transceiver session, submit_sm per part, receipts."""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Sequence
from typing import Any

from smpplib import consts as smpp_consts
from smpplib import exceptions as smpp_errors
from smpplib import gsm, smpp
from smpplib.client import Client

from perkflow.channels.rules import (
    Message,
    Receipt,
    SendResult,
    parse_receipt,
    smpp_status_retryable,
)
from perkflow.kit.crypto import mask_phone

log = logging.getLogger("perkflow.channels.sms")
# smpplib logs every PDU in hex (phone numbers included) and warns about every drop we already
# handle and report: keep its own logger quiet.
_WIRE_LOG = "perkflow.channels.sms.wire"
logging.getLogger(_WIRE_LOG).setLevel(logging.ERROR)

_ESM_DELIVERY_RECEIPT = 0x04
# message_state TLV values (SMPP 3.4, 5.2.28) of a final, failed delivery.
_STATE_DELIVERED = 2
_STATE_FAILED = {3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 7: "UNKNOWN", 8: "REJECTD"}
# Transport trouble: the session is gone or stuck; everything not yet answered may be retried.
_TRANSPORT = (smpp_errors.ConnectionError, OSError)


class _Refused(Exception):
    """A submit_sm answered with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


class SmppChannel:
    """SMS through an SMSC over one SMPP transceiver session, reopened when it drops."""

    name = "sms"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        source_addr: str = "10086",
        system_type: str = "",
        timeout_s: float = 5.0,
        reopen_after_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.system_id = system_id
        self.password = password
        self.source_addr = source_addr
        self.system_type = system_type
        self.timeout_s = timeout_s
        self.reopen_after_s = reopen_after_s
        self._client: Any = None
        self._failed_open_at: float | None = None
        self._lock = threading.RLock()
        self._receipts: list[Receipt] = []  # as the SMSC sent them, per part
        # A long message is several parts, each with its own id and receipt; the message's ref is
        # its first part's id and its receipt waits for every part (or the first failed one).
        self._part_of: dict[str, str] = {}
        self._parts_left: dict[str, set[str]] = {}

    # ---- session -----------------------------------------------------------------------------

    def _open(self) -> str | None:
        """Connect and bind; None when bound, else why not."""
        client = Client(
            self.host,
            self.port,
            timeout=self.timeout_s,
            logger_name=_WIRE_LOG,
            allow_unknown_opt_params=True,
        )
        try:
            client.connect()
            client.bind_transceiver(
                system_id=self.system_id, password=self.password, system_type=self.system_type
            )
        except smpp_errors.PDUError as exc:
            self._discard(client)
            self._failed_open_at = time.monotonic()
            return f"SMSC refused the bind: {exc.args[0]}"
        except _TRANSPORT as exc:
            self._discard(client)
            self._failed_open_at = time.monotonic()
            return f"SMSC unreachable at {self.host}:{self.port}: {type(exc).__name__}"
        self._client = client
        self._failed_open_at = None
        log.info("bound to SMSC %s:%s as %s", self.host, self.port, self.system_id)
        return None

    @staticmethod
    def _discard(client: Any) -> None:
        with contextlib.suppress(*_TRANSPORT):
            client.disconnect()

    def _drop(self) -> None:
        if self._client is not None:
            self._discard(self._client)
            self._client = None

    def _ensure(self) -> str | None:
        return None if self._client is not None else self._open()

    # ---- PDUs --------------------------------------------------------------------------------

    def _read_one(self) -> Any:
        """Read one PDU and act on what the SMSC sends unasked; the PDU."""
        pdu = self._client.read_pdu()
        if pdu.command == "deliver_sm":
            self._on_deliver(pdu)
            resp = smpp.make_pdu("deliver_sm_resp", client=self._client)
            resp.sequence = pdu.sequence
            self._client.send_pdu(resp)
        elif pdu.command == "enquire_link":
            resp = smpp.make_pdu("enquire_link_resp", client=self._client)
            resp.sequence = pdu.sequence
            self._client.send_pdu(resp)
        elif pdu.command == "unbind":
            # The SMSC is closing the session: answer, then treat it as a drop.
            resp = smpp.make_pdu("unbind_resp", client=self._client)
            resp.sequence = pdu.sequence
            self._client.send_pdu(resp)
            raise smpp_errors.ConnectionError("SMSC unbound the session")
        return pdu

    def _await_resp(self, sequence: int, command: str = "submit_sm_resp") -> Any:
        """Read until the answer to `sequence` (a socket timeout ends the wait)."""
        while True:
            pdu = self._read_one()
            if pdu.sequence == sequence and pdu.command in (command, "generic_nack"):
                return pdu

    def _drain(self) -> None:
        """Handle every PDU already waiting on the socket, without blocking."""
        sock = self._client._socket  # smpplib keeps its socket private; select needs it
        while sock is not None and select.select([sock], [], [], 0)[0]:
            self._read_one()

    def _on_deliver(self, pdu: Any) -> None:
        if not (pdu.esm_class or 0) & _ESM_DELIVERY_RECEIPT:
            return  # a mobile-originated message; campaigns do not take replies here
        receipt = parse_receipt(_text(pdu.short_message))
        if receipt is None and pdu.receipted_message_id:
            state = pdu.message_state
            if state == _STATE_DELIVERED:
                receipt = Receipt(message_ref=_text(pdu.receipted_message_id), delivered=True)
            elif state in _STATE_FAILED:
                receipt = Receipt(
                    message_ref=_text(pdu.receipted_message_id),
                    delivered=False,
                    error=_STATE_FAILED[state],
                )
        if receipt is not None:
            self._receipts.append(receipt)

    def _per_message(self, received: list[Receipt]) -> list[Receipt]:
        """Part receipts folded into one per message (called between sends, so parts are known)."""
        out: list[Receipt] = []
        for receipt in received:
            ref = self._part_of.pop(receipt.message_ref, None)
            if ref is None:
                out.append(receipt)
                continue
            left = self._parts_left.get(ref)
            if left is None:
                continue  # the message was already reported (an earlier part failed)
            left.discard(receipt.message_ref)
            if not receipt.delivered or not left:
                del self._parts_left[ref]
                out.append(
                    Receipt(message_ref=ref, delivered=receipt.delivered, error=receipt.error)
                )
        return out

    def _source_ton(self) -> int:
        if self.source_addr.isdigit():
            return int(smpp_consts.SMPP_TON_UNK)
        return int(smpp_consts.SMPP_TON_ALNUM)

    def _submit(self, message: Message) -> str:
        """Submit every part of one message; the ref (first part's message_id)."""
        try:
            parts, coding, esm_class = gsm.make_parts(
                message.body, encoding=smpp_consts.SMPP_ENCODING_ISO88591
            )
        except smpp_errors.MessageTooLong:
            raise _Refused(0x01) from None  # ESME_RINVMSGLEN
        ids: list[str] = []
        for part in parts:
            pdu = self._client.send_message(
                source_addr_ton=self._source_ton(),
                source_addr_npi=smpp_consts.SMPP_NPI_ISDN,
                source_addr=self.source_addr,
                dest_addr_ton=smpp_consts.SMPP_TON_UNK,
                dest_addr_npi=smpp_consts.SMPP_NPI_ISDN,
                destination_addr=message.address,
                short_message=part,
                data_coding=coding,
                esm_class=esm_class,
                registered_delivery=1,
            )
            resp = self._await_resp(pdu.sequence)
            if resp.status != smpp_consts.SMPP_ESME_ROK:
                raise _Refused(int(resp.status))
            ids.append(_text(resp.message_id))
        ref = ids[0]
        if len(ids) > 1:
            for part_id in ids:
                self._part_of[part_id] = ref
            self._parts_left[ref] = set(ids)
        return ref

    # ---- the Channel interface ---------------------------------------------------------------

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        """Submit each message; an unreachable or dropping SMSC gives retryable failures."""
        results: list[SendResult] = []
        with self._lock:
            for index, message in enumerate(messages):
                result: SendResult | None = None
                # A dropped session is reopened once per message; the message is sent again
                # (at-least-once: an SMSC that took it just before the drop has it twice).
                for _attempt in range(2):
                    problem = self._ensure()
                    if problem is not None:
                        break
                    try:
                        ref = self._submit(message)
                    except _Refused as exc:
                        desc = smpp_consts.DESCRIPTIONS.get(exc.status, "unknown status")
                        result = SendResult(
                            contact_id=message.contact_id,
                            ok=False,
                            error=f"submit_sm refused ({exc.status:#04x}): {desc}",
                            retryable=smpp_status_retryable(exc.status),
                        )
                        break
                    except _TRANSPORT as exc:
                        problem = f"SMPP session lost: {type(exc).__name__}"
                        log.warning("SMPP session to %s:%s lost; reopening", self.host, self.port)
                        self._drop()
                        continue
                    result = SendResult(contact_id=message.contact_id, ok=True, message_ref=ref)
                    break
                if result is None:
                    # The SMSC cannot be reached: this and every later message waits for a retry.
                    log.warning(
                        "SMS to %s not sent: %s", mask_phone(message.address), problem or "?"
                    )
                    results.extend(
                        SendResult(contact_id=m.contact_id, ok=False, error=problem, retryable=True)
                        for m in messages[index:]
                    )
                    break
                results.append(result)
        return results

    def receipts(self) -> list[Receipt]:
        """Delivery receipts received so far (reading what is waiting; reopening a lost session)."""
        with self._lock:
            # Polling for receipts must not hammer (or wait on) an SMSC that just failed to open.
            recently_failed = (
                self._client is None
                and self._failed_open_at is not None
                and time.monotonic() - self._failed_open_at < self.reopen_after_s
            )
            if not recently_failed and self._ensure() is None:
                try:
                    self._drain()
                except _TRANSPORT:
                    self._drop()
            taken, self._receipts = self._receipts, []
            return self._per_message(taken)

    def query(self, refs: Sequence[str]) -> list[Receipt]:
        """The final state of earlier messages, asked with query_sm (for receipts never seen).

        A receipt read by a worker that died before recording it is gone from the SMSC's queue;
        the SMSC still knows the message's state. Messages still en route, and ids the SMSC no
        longer knows, give no receipt. Any session of the same system_id may ask.
        """
        found: list[Receipt] = []
        with self._lock:
            for ref in refs:
                if self._ensure() is not None:
                    break
                try:
                    pdu = smpp.make_pdu(
                        "query_sm",
                        client=self._client,
                        message_id=ref,
                        source_addr_ton=self._source_ton(),
                        source_addr_npi=smpp_consts.SMPP_NPI_ISDN,
                        source_addr=self.source_addr,
                    )
                    self._client.send_pdu(pdu)
                    resp = self._await_resp(pdu.sequence, "query_sm_resp")
                except _TRANSPORT:
                    self._drop()
                    break
                if resp.command != "query_sm_resp" or resp.status != smpp_consts.SMPP_ESME_ROK:
                    continue  # ESME_RQUERYFAIL: the SMSC no longer knows the message
                state = resp.message_state
                if state == _STATE_DELIVERED:
                    found.append(Receipt(message_ref=ref, delivered=True))
                elif state in _STATE_FAILED:
                    found.append(
                        Receipt(message_ref=ref, delivered=False, error=_STATE_FAILED[state])
                    )
        return found

    def close(self) -> None:
        """Unbind and disconnect (receipts that were waiting are read first)."""
        with self._lock:
            client = self._client
            if client is None:
                return
            try:
                self._drain()
                unbind = smpp.make_pdu("unbind", client=client)
                client.send_pdu(unbind)
                while True:
                    pdu = self._read_one()
                    if pdu.command == "unbind_resp" or pdu.sequence == unbind.sequence:
                        break
            except (TimeoutError, *_TRANSPORT, smpp_errors.PDUError):
                pass
            self._drop()
