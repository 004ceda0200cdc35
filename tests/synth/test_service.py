"""Generating the synthetic operator into a real SQLite ledger, the mart and the truth folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import perkflow.models_registry  # noqa: F401  (registers every table on Base.metadata)
from perkflow.cli import migrate
from perkflow.cli.synth import synth
from perkflow.db import Base, make_engine, make_session_factory
from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.service import load_region_data, seed_regions
from perkflow.settings import Settings
from perkflow.subscribers.models import Subscriber
from perkflow.subscribers.service import count_subscribers, phone_of
from perkflow.synth import rules
from perkflow.synth.service import SynthReport, generate_operator, load_truth, truth_path

N = 1_500


def migrated_engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as session:
        seed_regions(session)
        session.commit()
    return engine


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", secret_key="synth-test-secret")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = migrated_engine(tmp_path / "l.db")
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return Vault(settings.master_secret)


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


def run(
    session: Session,
    settings: Settings,
    mart: Mart,
    vault: Vault,
    *,
    n: int = N,
    seed: int = 11,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthReport:
    return generate_operator(
        session,
        mart=mart,
        truth_dir=settings.truth_dir,
        vault=vault,
        n=n,
        seed=seed,
        replace=replace,
        progress=progress,
    )


def decrypted(session: Session, vault: Vault) -> dict[int, str]:
    subs = session.scalars(select(Subscriber).order_by(Subscriber.id)).all()
    return {s.id: phone_of(vault, s) for s in subs}


class TestGenerateOperator:
    def test_writes_ledger_mart_and_truth(
        self, session: Session, settings: Settings, mart: Mart, vault: Vault
    ) -> None:
        calls: list[tuple[int, int]] = []
        report = run(session, settings, mart, vault, progress=lambda d, t: calls.append((d, t)))
        session.commit()
        assert calls[-1] == (N, N)
        assert report.subscribers == N
        assert mart.tables() == ["subscriber_profile", "usage_monthly"]
        profile = mart.table("subscriber_profile").to_pyarrow()
        assert profile.num_rows == N
        assert mart.table("usage_monthly").count().execute() == 6 * N

        rows = session.execute(
            select(
                Subscriber.id,
                Subscriber.province_code,
                Subscriber.city_code,
                Subscriber.plan_fee_fen,
                Subscriber.status,
            ).order_by(Subscriber.id)
        ).all()
        by_id = {r["subscriber_id"]: r for r in profile.to_pylist()}
        assert [r.id for r in rows] == list(range(1, N + 1)) == sorted(by_id)
        for r in rows:
            p = by_id[r.id]
            assert (r.province_code, r.city_code, r.status) == (
                p["province_code"],
                p["city_code"],
                p["status"],
            )
            assert r.plan_fee_fen == p["plan_fee_yuan"] * 100

    def test_truth_is_outside_the_mart(
        self, session: Session, settings: Settings, mart: Mart, vault: Vault
    ) -> None:
        report = run(session, settings, mart, vault)
        path = truth_path(settings.truth_dir)
        assert report.truth_file == path
        assert path.exists()
        assert not path.resolve().is_relative_to(mart.root.resolve())
        assert "response_truth" not in mart.tables()
        with pytest.raises(LookupError):
            mart.table("response_truth")
        truth = load_truth(settings.truth_dir)
        assert truth.num_rows == N
        assert "effect_video" in truth.column_names

    def test_truth_folder_inside_the_mart_is_refused(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        with pytest.raises(ValidationFailed) as err:
            generate_operator(session, mart=mart, truth_dir=mart.root, vault=vault, n=10, seed=1)
        assert err.value.field == "truth_dir"

    def test_phones_are_encrypted_and_match_the_rules(
        self, session: Session, settings: Settings, mart: Mart, vault: Vault
    ) -> None:
        run(session, settings, mart, vault)
        stored = session.scalars(select(Subscriber.phone_enc).limit(5)).all()
        expected = rules.generate(N, 11, load_region_data()).phones.to_pylist()
        assert all(p.encode() not in blob for p, blob in zip(expected, stored, strict=False))
        assert list(decrypted(session, vault).values()) == expected

    def test_same_seed_same_operator_in_two_homes(self, tmp_path: Path) -> None:
        results = []
        for home in ("a", "b"):
            settings = Settings(home=tmp_path / home, secret_key=f"secret-{home}")
            vault = Vault(settings.master_secret)
            engine = migrated_engine(tmp_path / f"{home}.db")
            with make_session_factory(engine)() as s:
                mart = Mart(settings.mart_dir)
                run(s, settings, mart, vault, n=400, seed=5)
                s.commit()
                results.append(
                    (
                        decrypted(s, vault),
                        pq.read_table(mart.path("subscriber_profile")),
                        pq.read_table(mart.path("usage_monthly")),
                        load_truth(settings.truth_dir),
                    )
                )
            engine.dispose()
        (phones_a, *tables_a), (phones_b, *tables_b) = results
        assert phones_a == phones_b
        assert all(x.equals(y) for x, y in zip(tables_a, tables_b, strict=True))

    def test_a_second_run_needs_replace(
        self, session: Session, settings: Settings, mart: Mart, vault: Vault
    ) -> None:
        run(session, settings, mart, vault)
        session.commit()
        before = mart.path("subscriber_profile").stat().st_mtime_ns
        with pytest.raises(Conflict) as err:
            run(session, settings, mart, vault, n=50, seed=12)
        assert err.value.field == "subscribers"
        assert "--replace" in err.value.message
        assert mart.path("subscriber_profile").stat().st_mtime_ns == before
        session.rollback()

        report = run(session, settings, mart, vault, n=50, seed=12, replace=True)
        session.commit()
        assert report.replaced == N
        assert count_subscribers(session) == 50
        assert mart.table("subscriber_profile").count().execute() == 50

    def test_services_do_not_commit(
        self, session: Session, settings: Settings, mart: Mart, vault: Vault
    ) -> None:
        run(session, settings, mart, vault, n=20)
        assert count_subscribers(session) == 20
        session.rollback()
        assert count_subscribers(session) == 0

    @pytest.mark.parametrize(
        ("n", "seed", "field"),
        [(0, 1, "subscribers"), (50_000_001, 1, "subscribers"), (10, -1, "seed")],
    )
    def test_bad_input_names_the_field_and_changes_nothing(
        self,
        session: Session,
        settings: Settings,
        mart: Mart,
        vault: Vault,
        n: int,
        seed: int,
        field: str,
    ) -> None:
        with pytest.raises(ValidationFailed) as err:
            run(session, settings, mart, vault, n=n, seed=seed)
        assert err.value.field == field
        assert mart.tables() == []
        assert count_subscribers(session) == 0


class TestCommand:
    def test_synth_command_commits_and_prints_a_summary(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        home = tmp_path / "cli-home"
        monkeypatch.setenv("PERKFLOW_HOME", str(home))
        monkeypatch.setenv("PERKFLOW_SECRET_KEY", "cli-secret")
        monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
        settings = Settings()
        # Through Alembic, as `perkflow db upgrade` does: the command checks the schema version.
        ledger = make_engine(settings.ledger_url)
        migrate.upgrade(ledger)
        ledger.dispose()
        app = typer.Typer()
        app.command("synth")(synth)

        first = CliRunner().invoke(app, ["--subscribers", "300", "--seed", "3"])
        assert first.exit_code == 0, first.output
        assert "provinces" in first.output and "300" in first.output
        engine = make_engine(settings.ledger_url)
        with make_session_factory(engine)() as s:
            assert count_subscribers(s) == 300

        again = CliRunner().invoke(app, ["--subscribers", "300", "--seed", "3"])
        assert again.exit_code == 2
        assert "--replace" in again.output

        bad = CliRunner().invoke(app, ["--subscribers", "0"])
        assert bad.exit_code == 2
        assert "subscribers" in bad.output
        engine.dispose()
