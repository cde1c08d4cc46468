"""Who is champion: a metadata-store row changed by compare-and-set, its history, MLflow's
alias mirroring it (repaired when it disagrees, adopted when a home predates the row),
rollback, and the `platformctl models` commands on top. Real SQLite, real MLflow (SQLite
tracking database) under a throwaway home; no Ray."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mlplatform.errors import InputError
from mlplatform.metadata.champion import ChampionConflict
from mlplatform.metadata.store import MetadataStore
from mlplatform.models.registry import CHAMPION
from mlplatform.services import Services
from tests.champion_helpers import quick_home, registered_version
from tests.conftest import cli


def _chain(events: list) -> list[tuple[str | None, str]]:
    return [(e.from_version, e.to_version) for e in events]


# --- the record ----------------------------------------------------------------------


def test_compare_and_set_moves_only_from_the_expected_champion(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    assert store.champion("m") is None and store.champion_history("m") == []
    first = store.set_champion("m", "1", expected=None, action="promote", reason="run a", run_id="a")
    assert first.written and (first.from_version, first.to_version) == (None, "1")
    with pytest.raises(ChampionConflict, match=r"cannot make v2 champion: the champion is v1, not \(none\)"):
        store.set_champion("m", "2", expected=None, action="promote", reason="run b", run_id="b")
    with pytest.raises(ChampionConflict) as err:
        store.set_champion("m", "3", expected="7", action="manual", reason="by hand")
    assert (err.value.expected, err.value.actual, err.value.wanted) == ("7", "1", "3")
    assert store.champion("m").version == "1"  # type: ignore[union-attr]
    second = store.set_champion("m", "2", expected="1", action="promote", reason="run b", run_id="b")
    assert second.written and second.id > first.id
    champ = store.champion("m")
    assert champ is not None and champ.version == "2" and champ.previous == "1" and champ.change.run_id == "b"
    assert _chain(store.champion_history("m")) == [(None, "1"), ("1", "2")]
    assert store.champion_history("other") == [] and set(store.champions()) == {"m"}


def test_a_retried_change_is_found_not_repeated(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.set_champion("m", "1", expected=None, action="manual", reason="x")
    done = store.set_champion("m", "2", expected="1", action="promote", reason="run r", run_id="r")
    # The same run again (its step crashed after the commit): the champion is already its version.
    again = store.set_champion("m", "2", expected="1", action="promote", reason="run r", run_id="r")
    assert again.written is False and again.id == done.id
    # Asking for what already is, expecting it: nothing to do.
    same = store.set_champion("m", "2", expected="2", action="manual", reason="by hand")
    assert same.written is False and same.id == done.id
    # Another run expecting v1 is not let through by the version being equal to someone's change.
    with pytest.raises(ChampionConflict):
        store.set_champion("m", "2", expected="1", action="promote", reason="run s", run_id="s")
    assert _chain(store.champion_history("m")) == [(None, "1"), ("1", "2")]


# --- the registry: the alias mirrors the record ------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(quick_home(tmp_path / "home"))


def test_promote_rollback_and_the_alias_mirror(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    reg = services.models
    versions = [registered_version(services, "m", seed).version for seed in range(3)]
    assert versions == ["1", "2", "3"]
    assert reg.champion("m") is None
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        for v in versions:
            change, previous = reg.promote("m", v)
            assert change.to_version == v and change.action == "manual" and reg.alias("m", CHAMPION) == v
    assert previous == "2"
    assert "repaired" not in caplog.text  # mirroring a change just made is not a repair
    back = reg.rollback("m")
    assert (back.from_version, back.to_version, back.action) == ("3", "2", "rollback")
    assert reg.champion("m") == "2" == reg.alias("m", CHAMPION)
    # The version that held it before v2 is v3 (the rollback's own change): a second rollback undoes it.
    again = reg.rollback("m")
    assert (again.from_version, again.to_version) == ("2", "3") and reg.alias("m", CHAMPION) == "3"
    history = reg.champion_history("m")
    assert _chain(history) == [(None, "1"), ("1", "2"), ("2", "3"), ("3", "2"), ("2", "3")]
    assert [h.action for h in history] == ["manual"] * 3 + ["rollback"] * 2


def test_rollback_without_an_earlier_champion_is_a_clear_error(services: Services) -> None:
    reg = services.models
    registered_version(services, "m", 0)
    with pytest.raises(InputError, match="no earlier champion to roll back to"):
        reg.rollback("m")
    reg.promote("m", "1")
    with pytest.raises(InputError, match=r"champion history: -->1"):
        reg.rollback("m")
    with pytest.raises(InputError, match="is not registered"):
        reg.rollback("nope")


def test_a_reader_repairs_an_alias_that_disagrees_with_the_record(services: Services,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    reg = services.models
    for seed in range(2):
        registered_version(services, "m", seed)
    reg.promote("m", "1")
    reg.client.set_registered_model_alias("m", CHAMPION, "2")  # behind the record's back
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "1"
    assert reg.alias("m", CHAMPION) == "1"
    assert "pointed at v2 but the champion record says v1" in caplog.text
    # A crash between the record's commit and the alias: the record moved, the alias did not.
    services.metadata.set_champion("m", "2", expected="1", action="manual", reason="x")
    assert reg.alias("m", CHAMPION) == "1"
    assert reg.champion("m") == "2" == reg.alias("m", CHAMPION)
    assert _chain(reg.champion_history("m")) == [(None, "1"), ("1", "2")]  # repairs are not changes


def test_a_home_from_before_the_record_adopts_the_mlflow_alias(services: Services,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    reg = services.models
    for seed in range(2):
        registered_version(services, "m", seed)
    # What the previous release left: the alias, and its JSON history tag; no champion row.
    reg.client.set_registered_model_alias("m", CHAMPION, "2")
    reg.client.set_registered_model_tag("m", "mlplatform.champion_history", json.dumps(["1", "2"]))
    assert services.metadata.champion("m") is None
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "2"
    assert "adopted v2 from the MLflow alias" in caplog.text
    [adopted] = reg.champion_history("m")
    assert (adopted.from_version, adopted.to_version, adopted.action) == (None, "2", "adopt")
    assert "adopted from the MLflow alias" in adopted.reason
    assert reg.champion("m") == "2" and len(reg.champion_history("m")) == 1  # once
    # From there on it is an ordinary record: promote moves it by compare-and-set.
    reg.promote("m", "1")
    assert _chain(reg.champion_history("m")) == [(None, "2"), ("2", "1")]


def test_a_change_that_lands_between_read_and_write_wins(services: Services,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`models promote` reads the champion, checks the files, then sets: a promotion by
    another process in between makes it fail, changing nothing."""
    reg = services.models
    for seed in range(3):
        registered_version(services, "m", seed)
    reg.promote("m", "1")
    real_load = type(reg).load

    def load_then_someone_else_promotes(self, name: str, version: str):  # noqa: ANN001, ANN202
        out = real_load(self, name, version)
        if version == "3":
            services.metadata.set_champion("m", "2", expected="1", action="promote", reason="run x",
                                           run_id="x")
        return out

    monkeypatch.setattr(type(reg), "load", load_then_someone_else_promotes)
    monkeypatch.setattr(type(reg), "champion", lambda self, name: "1")  # the stale read
    with pytest.raises(ChampionConflict, match="the champion is v2, not v1"):
        reg.promote("m", "3")
    monkeypatch.undo()
    assert reg.champion("m") == "2" == reg.alias("m", CHAMPION)
    assert _chain(reg.champion_history("m")) == [(None, "1"), ("1", "2")]


# --- platformctl models ------------------------------------------------------------------


def test_models_commands_use_the_record(services: Services) -> None:
    env = {"PLATFORM_HOME": str(services.settings.home)}
    for seed in range(2):
        registered_version(services, "m", seed)
    promoted = cli("models", "promote", "m", "1", "--json", env=env)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert json.loads(promoted.stdout) == {"name": "m", "alias": "champion", "previous": None, "version": "1",
                                           "change_id": 1}
    assert cli("models", "promote", "m", "2", env=env).stdout.strip() == "m: champion v1 -> v2"
    assert "already is champion" in cli("models", "promote", "m", "2", env=env).stdout
    services.models.client.set_registered_model_alias("m", CHAMPION, "1")  # a stale alias
    shown = json.loads(cli("models", "show", "m", "2", "--json", env=env).stdout)
    assert shown["champion"] == "2" and shown["version"]["aliases"] == ["champion"]
    services.models.client.set_registered_model_alias("m", CHAMPION, "1")  # stale again
    listed = json.loads(cli("models", "list", "--json", env=env).stdout)
    assert [(m["name"], m["champion"]) for m in listed] == [("m", "2")]
    versions = json.loads(cli("models", "list", "m", "--json", env=env).stdout)
    assert [v["aliases"] for v in versions] == [[], ["champion"]]  # repaired before listing
    back = cli("models", "rollback", "m", "--json", env=env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["previous"] == "2" and json.loads(back.stdout)["version"] == "1"
    history = json.loads(cli("models", "history", "m", "--json", env=env).stdout)
    assert [(h["from_version"], h["to_version"], h["action"]) for h in history] == [
        (None, "1", "manual"), ("1", "2", "manual"), ("2", "1", "rollback")]
    table = cli("models", "history", "m", env=env)
    assert table.returncode == 0 and "rollback" in table.stdout
    missing = cli("models", "history", "nope", env=env)
    assert missing.returncode == 2 and "is not registered" in missing.stderr
