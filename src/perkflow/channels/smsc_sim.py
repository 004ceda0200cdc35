"""A minimal SMSC: a real SMPP 3.4 server on loopback that records messages and sends receipts."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from smpplib import consts as smpp_consts
from smpplib import gsm, smpp
from smpplib.client import SimpleSequenceGenerator

_ESME_RINVPASWD = 0x0E
_ESME_RINVBNDSTS = 0x04
_ESME_RINVDSTADR = 0x0B
_ESME_RALYBND = 0x05
_ESME_RQUERYFAIL = 0x67
_ESM_UDHI = 0x40
_SENDERS = ("bind_transmitter", "bind_transceiver")
_RECEIVERS = ("bind_receiver", "bind_transceiver")


@dataclass(frozen=True)
class ReceivedSms:
    """One whole short message as the SMSC saw it (a long message reassembled from its parts)."""

    system_id: str
    source: str
    destination: str
    text: str
    message_ids: tuple[str, ...]
    data_coding: int


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: str
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    system_id: str | None = None
    mode: str | None = None
    seq: Any = field(default_factory=SimpleSequenceGenerator)

    @property
    def receives(self) -> bool:
        return self.mode in _RECEIVERS

    def send(self, pdu: Any) -> None:
        data = pdu.generate()
        with self.write_lock:
            self.sock.sendall(data)


def gsm_decode(data: bytes) -> str:
    """GSM 03.38 default alphabet (unpacked septets), as smpplib encodes it."""
    table = gsm.GSM_CHARACTER_TABLE
    out, escape = [], False
    for byte in data:
        if byte == 0x1B:
            escape = True
            continue
        out.append(table[byte + 0x80] if escape else table[byte])
        escape = False
    return "".join(out)


def decode_text(data: bytes, data_coding: int) -> str:
    """The text of a short message in its data coding."""
    coding = data_coding & 0x0F if data_coding < 0xC0 else data_coding
    if coding == smpp_consts.SMPP_ENCODING_ISO10646:
        return data.decode("utf-16-be", errors="replace")
    if coding in (smpp_consts.SMPP_ENCODING_ISO88591, smpp_consts.SMPP_ENCODING_IA5):
        return data.decode("latin-1")
    if coding == smpp_consts.SMPP_ENCODING_DEFAULT:
        return gsm_decode(data)
    return data.decode("latin-1")


def split_udh(payload: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """(reference, total, sequence) of a concatenated part's UDH, and the text after it."""
    udhl = payload[0]
    header, rest = payload[1 : 1 + udhl], payload[1 + udhl :]
    pos = 0
    while pos + 2 <= len(header):
        iei, length = header[pos], header[pos + 1]
        value = header[pos + 2 : pos + 2 + length]
        if iei == 0x00 and length == 3:
            return (value[0], value[1], value[2]), rest
        if iei == 0x08 and length == 4:
            return (struct.unpack(">H", value[:2])[0], value[2], value[3]), rest
        pos += 2 + length
    return None, rest


class SmscSim:
    """An SMSC on loopback: binds with a password, takes submit_sm, answers, sends receipts.

    Receipts say DELIVRD, or UNDELIV for destinations in `undeliverable`; destinations in
    `rejected` are refused at submit_sm (ESME_RINVDSTADR). `refuse()` makes the port refuse
    connections and drops every session (an outage) until `resume()`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        system_id: str = "perkflow",
        password: str = "secret",  # noqa: S107  (a simulator's demo password)
        undeliverable: Iterable[str] = (),
        rejected: Iterable[str] = (),
        on_message: Callable[[ReceivedSms], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.system_id = system_id
        self.password = password
        self.undeliverable = set(undeliverable)
        self.rejected = set(rejected)
        self.on_message = on_message
        self._lock = threading.Lock()
        self._messages: list[ReceivedSms] = []
        self._parts: dict[tuple[str, str, str, int], dict[int, tuple[str, bytes]]] = {}
        self._pending: list[tuple[str, dict[str, Any]]] = []
        # Receipts sent but not yet answered with deliver_sm_resp: a lost session sends them again.
        self._unacked: dict[tuple[int, int], tuple[str, dict[str, Any]]] = {}
        # Each message's final state for query_sm: (message_state, final_date, error_code).
        self._states: dict[str, tuple[int, str, int]] = {}
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.submits = 0
        self.binds = 0
        self.receipts_sent = 0
        self.queries = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SmscSim:
        """Listen (on a free port when port is 0) and accept sessions in a thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(16)
        except OSError:
            listener.close()  # a port in use leaves no socket behind
            raise
        listener.settimeout(0.05)  # the accept loop notices stop() within this
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop.clear()
        thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening and drop every session."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def refuse(self) -> None:
        """Outage: connections to the port are refused and open sessions are cut."""
        self.stop()

    def resume(self) -> None:
        """End an outage: listen on the same port again."""
        self.start()

    def drop_connections(self) -> None:
        """Cut every open session without an unbind (a network drop)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> SmscSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what was received -------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedSms]:
        """Every whole message received so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, *, timeout_s: float = 5.0) -> list[ReceivedSms]:
        """The messages once at least `count` arrived; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.messages
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.messages)} of {count} messages arrived")

    # ---- serving -----------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conn = _Conn(sock=sock, peer=f"{addr[0]}:{addr[1]}")
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv_exact(sock: socket.socket, size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            chunk = sock.recv(size - got)
            if not chunk:
                raise ConnectionError("peer closed")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _serve(self, conn: _Conn) -> None:
        try:
            while True:
                head = self._recv_exact(conn.sock, 4)
                (length,) = struct.unpack(">L", head)
                raw = head + self._recv_exact(conn.sock, length - 4)
                pdu = smpp.parse_pdu(raw, client=conn.seq, allow_unknown_opt_params=True)
                if pdu is None or not self._handle(conn, pdu):
                    break
        except (OSError, ConnectionError, ValueError, struct.error):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
                lost = [k for k in self._unacked if k[0] == id(conn)]
                self._pending[:0] = [self._unacked.pop(k) for k in lost]
            with contextlib.suppress(OSError):
                conn.sock.close()
            # Receipts the lost session never acknowledged go to another bound session at once
            # (or wait for the next bind), as an SMSC does.
            if lost and not self._stop.is_set():
                self._flush_receipts()

    def _reply(
        self, conn: _Conn, request: Any, command: str, status: int = 0, **fields: Any
    ) -> None:
        resp = smpp.make_pdu(command, client=conn.seq)
        resp.sequence = request.sequence
        resp.status = status
        for name, value in fields.items():
            setattr(resp, name, value)
        conn.send(resp)

    def _handle(self, conn: _Conn, pdu: Any) -> bool:
        """Answer one PDU; False ends the session."""
        command = pdu.command
        if command in (*_SENDERS, "bind_receiver"):
            given_id = bytes(pdu.system_id or b"").decode("latin-1")
            given_pw = bytes(pdu.password or b"").decode("latin-1")
            if conn.mode is not None:
                status = _ESME_RALYBND
            elif given_id != self.system_id or given_pw != self.password:
                status = _ESME_RINVPASWD
            else:
                status = 0
                conn.mode, conn.system_id = command, given_id
                with self._lock:
                    self.binds += 1
            self._reply(conn, pdu, f"{command}_resp", status, system_id="perkflow-smsc")
            if status == 0:
                self._flush_receipts()
            return True
        if command == "submit_sm":
            self._on_submit(conn, pdu)
            self._flush_receipts()
            return True
        if command == "query_sm":
            self._on_query(conn, pdu)
            return True
        if command == "enquire_link":
            self._reply(conn, pdu, "enquire_link_resp")
            return True
        if command == "unbind":
            self._reply(conn, pdu, "unbind_resp")
            return False
        if command == "deliver_sm_resp":
            with self._lock:
                self._unacked.pop((id(conn), pdu.sequence), None)
            return True
        if command in ("enquire_link_resp", "generic_nack"):
            return True
        self._reply(conn, pdu, "generic_nack", 0x03)  # ESME_RINVCMDID
        return True

    def _on_submit(self, conn: _Conn, pdu: Any) -> None:
        if conn.mode not in _SENDERS:
            self._reply(conn, pdu, "submit_sm_resp", _ESME_RINVBNDSTS)
            return
        destination = bytes(pdu.destination_addr or b"").decode("latin-1")
        source = bytes(pdu.source_addr or b"").decode("latin-1")
        if destination in self.rejected:
            self._reply(conn, pdu, "submit_sm_resp", _ESME_RINVDSTADR)
            return
        message_id = f"{next(self._ids):010X}"
        self._reply(conn, pdu, "submit_sm_resp", message_id=message_id)
        payload = bytes(pdu.short_message or b"")
        coding = int(pdu.data_coding or 0)
        whole: ReceivedSms | None = None
        with self._lock:
            self.submits += 1
            udh = None
            if (pdu.esm_class or 0) & _ESM_UDHI and payload:
                udh, payload = split_udh(payload)
            assert conn.system_id is not None
            if udh is None:
                whole = ReceivedSms(
                    conn.system_id,
                    source,
                    destination,
                    decode_text(payload, coding),
                    (message_id,),
                    coding,
                )
            else:
                ref, total, seqnum = udh
                key = (conn.system_id, source, destination, ref)
                parts = self._parts.setdefault(key, {})
                parts[seqnum] = (message_id, payload)
                if len(parts) == total:
                    del self._parts[key]
                    ordered = [parts[i] for i in sorted(parts)]
                    whole = ReceivedSms(
                        conn.system_id,
                        source,
                        destination,
                        decode_text(b"".join(p for _, p in ordered), coding),
                        tuple(i for i, _ in ordered),
                        coding,
                    )
            if whole is not None:
                self._messages.append(whole)
            # Every message is final at once here: delivered, or undeliverable. (The final
            # date is SMPP absolute time, YYMMDDhhmmsstnnp, in UTC.)
            self._states[message_id] = (
                5 if destination in self.undeliverable else 2,
                datetime.now(UTC).strftime("%y%m%d%H%M%S") + "000+",
                1 if destination in self.undeliverable else 0,
            )
            if pdu.registered_delivery:
                self._pending.append(
                    (conn.system_id, self._receipt(message_id, source, destination))
                )
        if whole is not None and self.on_message is not None:
            self.on_message(whole)

    def _on_query(self, conn: _Conn, pdu: Any) -> None:
        message_id = bytes(pdu.message_id or b"").decode("latin-1")
        with self._lock:
            self.queries += 1
            known = self._states.get(message_id)
        if conn.mode is None:
            self._reply(conn, pdu, "query_sm_resp", _ESME_RINVBNDSTS, message_id=message_id)
        elif known is None:
            self._reply(conn, pdu, "query_sm_resp", _ESME_RQUERYFAIL, message_id=message_id)
        else:
            state, final_date, error = known
            self._reply(
                conn,
                pdu,
                "query_sm_resp",
                message_id=message_id,
                final_date=final_date,
                message_state=state,
                error_code=error,
            )

    def _receipt(self, message_id: str, source: str, destination: str) -> dict[str, Any]:
        failed = destination in self.undeliverable
        stamp = datetime.now(UTC).strftime("%y%m%d%H%M")
        stat, err, state = ("UNDELIV", "001", 5) if failed else ("DELIVRD", "000", 2)
        text = (
            f"id:{message_id} sub:001 dlvrd:{'000' if failed else '001'} submit date:{stamp} "
            f"done date:{stamp} stat:{stat} err:{err} text:"
        )
        return {
            "source_addr": destination,
            "destination_addr": source,
            "esm_class": 0x04,
            "short_message": text.encode("ascii"),
            "receipted_message_id": message_id,
            "message_state": state,
        }

    def _flush_receipts(self) -> None:
        """Send receipts to a receiving session of their system id (kept until one binds)."""
        with self._lock:
            pending, self._pending = self._pending, []
            conns = [c for c in self._conns if c.receives]
        kept: list[tuple[str, dict[str, Any]]] = []
        for system_id, fields in pending:
            target = next((c for c in conns if c.system_id == system_id), None)
            if target is None:
                kept.append((system_id, fields))
                continue
            pdu = smpp.make_pdu("deliver_sm", client=target.seq, **fields)
            with self._lock:
                self._unacked[(id(target), pdu.sequence)] = (system_id, fields)
            try:
                target.send(pdu)
            except OSError:
                continue  # back to pending when the session's reader sees it closed
            with self._lock:
                self.receipts_sent += 1
        if kept:
            with self._lock:
                self._pending = kept + self._pending
