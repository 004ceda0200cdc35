"""The run monitor: a campaign's waves as they plan and send, and the bounded "dispatch now"."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from typing import Annotated, Any

from fastapi import BackgroundTasks, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import rules, tasks
from perkflow.campaigns import service as campaigns
from perkflow.channels import service as channels_service
from perkflow.kit.bounds import IdParam
from perkflow.kit.crypto import Vault, mask_phone
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.settings import Settings
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, StaffContext, VaultDep
from perkflow.web.i18n import l_
from perkflow.web.render import render

from ._common import router
from .campaign import _campaign_page

log = logging.getLogger("perkflow.campaigns.pages")
# "Dispatch now" on the monitor is for demos and tests; the background worker does the real work.
DISPATCH_MAX_CONTACTS = 5_000
DISPATCH_MAX_SECONDS = 10.0
STATUS_ORDER = ("queued", "sending", "sent", "delivered", "failed", "held", "suppressed")
LIVE_WAVES = frozenset({"planning", "running"})
PHONE = re.compile(r"(?<!\d)1\d{10}(?!\d)")


def _monitor_context(session: Session, staff: StaffContext, campaign_id: int) -> dict[str, Any]:
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    progress = campaigns.run_progress(session, actor=staff.actor, campaign_id=campaign_id)
    waves = []
    for w in progress.waves:
        # An adapter's error may echo the address: phone numbers stay masked on screen.
        failures = [
            replace(f, error=PHONE.sub(lambda m: mask_phone(m.group(0)), f.error or ""))
            for f in w.failures
        ]
        total = sum(w.by_status.values())
        waves.append(
            {
                "w": w,
                "failures": failures,
                "total": total,
                "done": w.done,
                "percent": round(100 * w.done / total) if total else 0,
                "counts": [(s, w.by_status.get(s, 0)) for s in STATUS_ORDER],
                "others": sorted(s for s in w.by_status if s not in STATUS_ORDER),
                "reasons": sorted(w.suppressed.items(), key=lambda kv: -kv[1]),
            }
        )
    live = campaign.status == rules.CampaignStatus.RUNNING and any(
        w.status in LIVE_WAVES for w in progress.waves
    )
    return {
        "c": campaign,
        "progress": progress,
        "waves": waves,
        "list_reasons": sorted(progress.list_reasons.items(), key=lambda kv: -kv[1]),
        "live": live,
        "can_dispatch": staff.actor.can(Perm.CAMPAIGNS_RUN)
        and campaign.status == rules.CampaignStatus.RUNNING,
        "max_contacts": DISPATCH_MAX_CONTACTS,
        "max_seconds": DISPATCH_MAX_SECONDS,
    }


@router.get("/console/campaigns/{campaign_id}/monitor")
def monitor(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    dispatched: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    context = _monitor_context(session, staff, campaign_id)
    return render(request, "campaigns/monitor.html", {**context, "dispatched": dispatched})


@router.get("/console/campaigns/{campaign_id}/monitor/live")
def monitor_live(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    """The monitor's figures (htmx polls this every 2 s while a wave is planning or sending)."""
    context = _monitor_context(session, staff, campaign_id)
    return render(request, "campaigns/_monitor_live.html", context)


def dispatch_bounded(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    vault: Vault,
    mart: Mart,
    campaign_id: int,
) -> tasks.WorkerReport | None:
    """One bounded worker run on one campaign: plan and send until done, 5,000 contacts or 10 s."""
    channels = channels_service.open_channels(settings, vault=vault)
    stop = threading.Event()
    timer = threading.Timer(DISPATCH_MAX_SECONDS, stop.set)

    def on_round(report: tasks.WorkerReport) -> None:
        if report.dispatch.claimed >= DISPATCH_MAX_CONTACTS:
            stop.set()

    timer.start()
    try:
        return tasks.run_worker(
            sessions,
            tasks.Dispatcher(channels=channels, vault=vault, settings=settings),
            mart=mart,
            batch_size=500,
            max_wait_s=0.0,  # do not linger for retries: the background worker takes those
            stop=stop,
            on_round=on_round,
            # Only the campaign whose page it was pressed on: its visibility was checked there.
            campaign_id=campaign_id,
        )
    except Exception:  # a background run has no one to answer to but the log
        log.exception("dispatch from the console failed")
        return None
    finally:
        timer.cancel()
        channels_service.close_channels(channels)


@router.post("/console/campaigns/{campaign_id}/dispatch", dependencies=[CsrfProtected])
def dispatch_now(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    background: BackgroundTasks,
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_RUN)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.status != rules.CampaignStatus.RUNNING:
        return _campaign_page(
            request,
            staff,
            session,
            campaign_id,
            error=l_("a {status} campaign has nothing to dispatch", status=campaign.status),
            status_code=409,
        )
    org.record_audit(
        session,
        actor=staff.actor,
        action="campaign.dispatch_now",
        target_type="campaign",
        target_id=str(campaign.id),
        details={"max_contacts": DISPATCH_MAX_CONTACTS, "max_seconds": DISPATCH_MAX_SECONDS},
    )
    # Runs after the response (and after this request's commit): the monitor shows it progress.
    background.add_task(
        dispatch_bounded,
        request.app.state.sessions,
        settings=request.app.state.settings,
        vault=vault,
        mart=mart,
        campaign_id=campaign.id,
    )
    return RedirectResponse(
        f"/console/campaigns/{campaign_id}/monitor?dispatched=1", status_code=303
    )
