"""`perkflow channels …`: loopback SMSC and SMTP peers for demos, and a one-message send test."""

from __future__ import annotations

import threading
import time
from datetime import UTC
from typing import Annotated

import typer
from rich.markup import escape

from perkflow.channels import service as channels
from perkflow.channels.rules import CHANNELS, Message
from perkflow.channels.smsc_sim import ReceivedSms, SmscSim
from perkflow.channels.smtp_sink import ReceivedMail, SmtpSink
from perkflow.cli.context import console, get_context, handles_errors
from perkflow.cli.ports import listening
from perkflow.errors import ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import mask_phone

channels_app = typer.Typer(
    help="Channels: SMSC and SMTP peers on loopback, send tests.", no_args_is_help=True
)


def _serve_until_interrupted() -> None:
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopped")


@channels_app.command("smsc-sim")
def smsc_sim(
    port: Annotated[int, typer.Option(help="loopback port")] = 2775,
    system_id: Annotated[str, typer.Option(help="the ESME's system_id")] = "perkflow",
    password: Annotated[
        str, typer.Option(envvar="PERKFLOW_SMPP_PASSWORD", help="the bind password")
    ] = "secret",  # noqa: S107  (a simulator's demo password, overridable)
    undeliverable: Annotated[
        list[str] | None, typer.Option(help="destinations whose receipt says UNDELIV")
    ] = None,
) -> None:
    """A simulated SMSC on 127.0.0.1 (SMPP 3.4): prints each message it receives."""

    def show(sms: ReceivedSms) -> None:
        console.print(
            f"SMS {'+'.join(sms.message_ids)} to {sms.destination} from {sms.source}: "
            f"{escape(sms.text)}"
        )

    sim = SmscSim(
        port=port,
        system_id=system_id,
        password=password,
        undeliverable=undeliverable or (),
        on_message=show,
    )
    with listening(port=port):
        sim.start()
    try:
        console.print(
            f"SMSC listening on 127.0.0.1:{sim.port} (system_id {system_id}); Ctrl-C stops"
        )
        _serve_until_interrupted()
    finally:
        sim.stop()


@channels_app.command("smtp-sink")
def smtp_sink(
    port: Annotated[int, typer.Option(help="loopback port")] = 2525,
    reject: Annotated[list[str] | None, typer.Option(help="recipients answered with 550")] = None,
) -> None:
    """An SMTP server on 127.0.0.1 that accepts and prints every mail."""

    def show(mail: ReceivedMail) -> None:
        console.print(
            f"mail {escape(mail.message_id)} to {mail.to}: {escape(mail.subject)} | "
            f"{escape(mail.body[:200])}"
        )

    sink = SmtpSink(port=port, rejected=reject or (), on_mail=show)
    with listening(port=port):
        sink.start()
    try:
        console.print(f"SMTP sink listening on 127.0.0.1:{sink.port}; Ctrl-C stops")
        _serve_until_interrupted()
    finally:
        sink.stop()


@channels_app.command("send-test")
@handles_errors
def send_test(
    channel: Annotated[str, typer.Argument(help=f"one of {', '.join(CHANNELS)}")],
    address: Annotated[str, typer.Argument(help="phone, e-mail address or subscriber id")],
    subject: Annotated[str, typer.Option(help="title (e-mail, in-app)")] = "perkflow test",
    body: Annotated[str, typer.Option(help="the text")] = "这是一条测试消息 / a test message",
    wait_receipt_s: Annotated[
        float, typer.Option(min=0, help="wait this long for a delivery receipt")
    ] = 3.0,
) -> None:
    """Send one message through the configured adapter and print what became of it."""
    if channel not in CHANNELS:
        raise ValidationFailed(f"unknown channel; one of {', '.join(CHANNELS)}", field="channel")
    ctx = get_context()
    opened = channels.open_channels(ctx.settings, vault=ctx.vault)
    adapter = opened.get(channel)
    if adapter is None:
        raise ValidationFailed(channels.NOT_CONFIGURED, field="channel")
    subscriber_id = int(address) if channel in ("in_app", "webhook") and address.isdigit() else 0
    if channel == "in_app" and not subscriber_id:
        raise ValidationFailed("give the subscriber id as the address", field="address")
    if subscriber_id:
        from perkflow.audience import holdout  # the universal control group gets nothing

        with ctx.uow() as session:
            on = clock.now().astimezone(UTC).date()
            if holdout.held_out(session, vault=ctx.vault, subscriber_ids=[subscriber_id], on=on):
                raise ValidationFailed(
                    f"subscriber {subscriber_id} is in the universal control group: no message",
                    field="address",
                )
    # A test is no campaign contact: campaign 0 and a contact id no real contact has.
    message = Message(
        contact_id=time.time_ns() // 1000,
        subscriber_id=subscriber_id,
        campaign_id=0,
        address=address,
        subject=subject,
        body=body,
    )
    shown = mask_phone(address) if channel == "sms" else address
    try:
        with ctx.uow() as session:
            [result] = adapter.send(session, [message])
            session.commit()
        state = "accepted" if result.ok else ("failed, retryable" if result.retryable else "failed")
        console.print(
            f"{channel} to {shown}: {state}"
            + (f", ref {result.message_ref}" if result.message_ref else "")
            + (", delivered" if result.delivered else "")
            + (f" ({escape(result.error)})" if result.error else "")
        )
        if result.ok and not result.delivered and wait_receipt_s and channel == "sms":
            deadline = time.monotonic() + wait_receipt_s
            while time.monotonic() < deadline:
                receipts = [r for r in adapter.receipts() if r.message_ref == result.message_ref]
                if receipts:
                    r = receipts[0]
                    verdict = "delivered" if r.delivered else f"not delivered ({r.error})"
                    console.print(f"receipt for {r.message_ref}: {verdict}")
                    break
                time.sleep(0.05)
            else:
                console.print(f"no receipt within {wait_receipt_s:g} s")
        if not result.ok:
            raise typer.Exit(code=1)
    finally:
        channels.close_channels(opened)
