"""Who is champion: a metadata-store row changed by compare-and-set, its history, MLflow's
alias mirroring it (repaired when it disagrees, adopted when a home predates the row),
rollback, and the `platformctl models` commands on top. Real SQLite, real MLflow (SQLite
tracking database) under a throwaway home; no Ray."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from mlplatform.errors import InputError
from mlplatform.metadata.champion import ChampionConflict
from mlplatform.metadata.schema import ChampionRow, utcnow
from mlplatform.metadata.store import MetadataStore
from mlplatform.models.registry import ALIAS_WRITE_TRIES, CHAMPION, HISTORY_TAG, ModelRegistry
from mlplatform.services import Services
from tests.champion_helpers import quick_home, registered_version
from tests.conftest import cli


def _chain(events: list) -> list[tuple[str | None, str]]:
    return [(e.from_version, e.to_version) for e in events]


def _settle(services: Services, name: str) -> None:
    """Age the champion's last change past the registry's mirror grace, as if it were made
    long ago: a disagreeing alias is then damage for a reader to repair, not a mirror still
    under way."""
    long_ago = utcnow() - dt.timedelta(seconds=2 * ModelRegistry.mirror_grace_s)
    with services.metadata.session() as s:
        s.execute(update(ChampionRow).where(ChampionRow.name == name).values(changed_at=long_ago))


def _bare_versions(services: Services, name: str, n: int) -> None:
    """n registered versions whose files are a text file: enough for aliases and history,
    never loaded (adoption does not load)."""
    reg = services.models
    for i in range(n):
        run = reg.start_run("p", f"bare-{i}", {})
        reg.client.log_text(run, f"model {i}", "model/model.txt")
        reg.end_run(run)
        reg.register(name, run, tags={})


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


def test_adopting_is_all_or_nothing_and_only_without_a_record(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    last = store.adopt_champion("m", [("1", "imported"), ("3", "imported"), ("2", "adopted")], actor="me")
    assert (last.from_version, last.to_version, last.action, last.reason) == ("3", "2", "adopt", "adopted")
    assert store.champion("m").change.id == last.id  # type: ignore[union-attr]
    assert _chain(store.champion_history("m")) == [(None, "1"), ("1", "3"), ("3", "2")]
    store.set_champion("n", "5", expected=None, action="manual", reason="x")
    with pytest.raises(ChampionConflict, match="the champion is v5, not"):  # another process came first
        store.adopt_champion("n", [("4", "imported"), ("6", "adopted")])
    assert _chain(store.champion_history("n")) == [(None, "5")]


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
    _bare_versions(services, "m", 2)
    reg.set_champion("m", "1", expected=None, action="manual", reason="x")
    _settle(services, "m")
    reg.client.set_registered_model_alias("m", CHAMPION, "2")  # behind the record's back
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "1"
    assert reg.alias("m", CHAMPION) == "1"
    assert "pointed at v2 but the champion record says v1" in caplog.text
    # A crash between the record's commit and the alias: the record moved, the alias did not.
    services.metadata.set_champion("m", "2", expected="1", action="manual", reason="x")
    _settle(services, "m")
    assert reg.alias("m", CHAMPION) == "1"
    assert reg.champion("m") == "2" == reg.alias("m", CHAMPION)
    assert _chain(reg.champion_history("m")) == [(None, "1"), ("1", "2")]  # repairs are not changes


def test_a_reader_leaves_a_change_being_mirrored_alone(services: Services,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Between a change's commit and its mirror, a reader sees the alias disagree: that is
    the mirror under way, not damage. The reader answers the record, neither writes the
    alias nor warns; only a disagreement that outlives the grace is repaired."""
    reg = services.models
    _bare_versions(services, "m", 2)
    reg.set_champion("m", "1", expected=None, action="manual", reason="x")
    services.metadata.set_champion("m", "2", expected="1", action="manual", reason="y")  # not mirrored yet
    written: list[tuple[str, str]] = []
    real_set = reg.client.set_registered_model_alias

    def recording(name: str, alias: str, version: str) -> None:
        written.append((alias, str(version)))
        real_set(name, alias, version)

    reg.client.set_registered_model_alias = recording  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "2"
        assert reg.champion_record("m").version == "2"  # type: ignore[union-attr]
    assert written == [] and reg.alias("m", CHAMPION) == "1" and "repaired" not in caplog.text
    _settle(services, "m")  # its maker died before mirroring: now it is damage
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "2"
    assert written == [(CHAMPION, "2")] and reg.alias("m", CHAMPION) == "2"
    assert "pointed at v1 but the champion record says v2" in caplog.text


def test_no_metadata_write_lock_is_held_during_the_mlflow_call(services: Services) -> None:
    """A slow tracking server must not stall the metadata store: while the alias is being
    set, another process writes to the same SQLite database without waiting (a 200 ms busy
    timeout: the write lock would make it fail with "database is locked")."""
    reg = services.models
    _bare_versions(services, "m", 2)
    other = MetadataStore(services.metadata.url)
    event.listen(other.engine, "connect",
                 lambda conn, _record: conn.execute("PRAGMA busy_timeout=200"))  # after the store's 30 s
    other.engine.dispose()  # its pooled connections predate the listener
    real_set = reg.client.set_registered_model_alias
    during: list[str] = []

    def write_meanwhile(name: str, alias: str, version: str) -> None:
        alert = other.add_alert("p", "info", "probe", f"written while the alias goes to v{version}")
        during.append(alert.message)
        real_set(name, alias, version)

    reg.client.set_registered_model_alias = write_meanwhile  # type: ignore[method-assign]
    reg.set_champion("m", "1", expected=None, action="manual", reason="x")
    reg.set_champion("m", "2", expected="1", action="manual", reason="y")
    reg.client.set_registered_model_alias("m", CHAMPION, "1")  # damage, for a reader to repair
    _settle(services, "m")
    assert reg.champion("m") == "2"
    assert len(during) == 4  # two mirrors, the stale write above and the repair
    assert [a.message for a in services.metadata.alerts("p")] == list(reversed(during))
    assert reg.alias("m", CHAMPION) == "2"


def test_a_mirror_that_loses_the_race_to_create_the_alias_tries_again(services: Services) -> None:
    """MLflow creates an alias by read-then-insert: with no lock around the mirror, two
    processes creating it at once make the second fail on the unique key. It tries again
    (the alias may be right by then); an error that persists is raised."""
    from mlflow.exceptions import MlflowException

    reg = services.models
    _bare_versions(services, "m", 2)
    real_set = reg.client.set_registered_model_alias
    calls: list[str] = []

    def collide_once(name: str, alias: str, version: str) -> None:
        calls.append(str(version))
        if len(calls) == 1:
            real_set(name, alias, "1")  # the other process's mirror of an older change lands first
            raise MlflowException("UNIQUE constraint failed: registered_model_aliases.name, alias")
        real_set(name, alias, version)

    reg.client.set_registered_model_alias = collide_once  # type: ignore[method-assign]
    reg.set_champion("m", "1", expected=None, action="manual", reason="x")
    services.metadata.set_champion("m", "2", expected="1", action="manual", reason="y")
    reg.mirror_champion("m")
    assert calls == ["1", "2"] and reg.alias("m", CHAMPION) == "2"

    def always_failing(name: str, alias: str, version: str) -> None:
        calls.append(str(version))
        raise MlflowException("tracking server unavailable")

    reg.client.set_registered_model_alias = always_failing  # type: ignore[method-assign]
    services.metadata.set_champion("m", "1", expected="2", action="manual", reason="z")
    calls.clear()
    with pytest.raises(MlflowException, match="tracking server unavailable"):
        reg.mirror_champion("m")
    assert calls == ["1"] * ALIAS_WRITE_TRIES


def test_a_mirror_overtaken_by_a_newer_change_ends_on_it(services: Services) -> None:
    """Mirroring without the lock: a change to v3 commits and mirrors while v2's alias
    write is still on its way, which then lands last. v2's mirror reads the row again, finds
    v3 and sets the alias again: it never ends on the older version."""
    reg = services.models
    _bare_versions(services, "m", 3)
    reg.set_champion("m", "1", expected=None, action="manual", reason="x")
    real_set = reg.client.set_registered_model_alias
    overtaken = {"armed": True}

    def slow(name: str, alias: str, version: str) -> None:
        if overtaken["armed"] and str(version) == "2":
            overtaken["armed"] = False
            reg.set_champion("m", "3", expected="2", action="manual", reason="z")  # commits and mirrors
            assert reg.alias("m", CHAMPION) == "3"
        real_set(name, alias, version)  # v2's write lands after v3's

    reg.client.set_registered_model_alias = slow  # type: ignore[method-assign]
    reg.set_champion("m", "2", expected="1", action="manual", reason="y")
    assert not overtaken["armed"]
    assert services.metadata.champion("m").version == "3" == reg.alias("m", CHAMPION)  # type: ignore[union-attr]
    assert _chain(reg.champion_history("m")) == [(None, "1"), ("1", "2"), ("2", "3")]


def test_a_home_from_before_the_record_adopts_the_mlflow_alias(services: Services,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    reg = services.models
    _bare_versions(services, "m", 2)
    # What the previous release left: the alias, and its JSON history tag; no champion row.
    reg.client.set_registered_model_alias("m", CHAMPION, "2")
    reg.client.set_registered_model_tag("m", HISTORY_TAG, json.dumps(["1", "2"]))
    assert services.metadata.champion("m") is None
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == "2"
    assert "adopted v2 from the MLflow alias 'champion' and 1 earlier champion(s) from the MLflow tag" \
        in caplog.text
    imported, adopted = reg.champion_history("m")
    assert (imported.from_version, imported.to_version, imported.action) == (None, "1", "adopt")
    assert "imported from the MLflow tag mlplatform.champion_history" in imported.reason
    assert (adopted.from_version, adopted.to_version, adopted.action) == ("1", "2", "adopt")
    assert "adopted from the MLflow alias" in adopted.reason
    assert services.metadata.champion("m").change.id == adopted.id  # type: ignore[union-attr]
    assert reg.champion("m") == "2" and len(reg.champion_history("m")) == 2  # once
    # From there on it is an ordinary record: promote moves it by compare-and-set.
    reg.set_champion("m", "1", expected="2", action="manual", reason="x")
    assert _chain(reg.champion_history("m")) == [(None, "1"), ("1", "2"), ("2", "1")]


def test_an_upgraded_home_rolls_back_where_it_did_before_the_upgrade(services: Services) -> None:
    """The previous release kept the champion history in the registered model's tag; the
    day after the upgrade, `models rollback` goes to the tag's previous champion."""
    reg = services.models
    for seed in range(3):
        registered_version(services, "m", seed)
    reg.client.set_registered_model_alias("m", CHAMPION, "3")
    reg.client.set_registered_model_tag("m", HISTORY_TAG, json.dumps(["1", "3", "2", "3"]))
    back = cli("models", "rollback", "m", "--json", env={"PLATFORM_HOME": str(services.settings.home)})
    assert back.returncode == 0, back.stdout + back.stderr
    assert (json.loads(back.stdout)["previous"], json.loads(back.stdout)["version"]) == ("3", "2")
    assert reg.champion("m") == "2" == reg.alias("m", CHAMPION)
    history = reg.champion_history("m")
    assert _chain(history) == [(None, "1"), ("1", "3"), ("3", "2"), ("2", "3"), ("3", "2")]
    assert [h.action for h in history] == ["adopt"] * 4 + ["rollback"]


@pytest.mark.parametrize(("tag", "alias", "chain"), [
    (None, "2", [(None, "2")]),  # no history kept: the alias alone
    (["1", "2"], "3", [(None, "1"), ("1", "2"), ("2", "3")]),  # the alias wins over the tag's last
    ([1, "2", "2", 3], "3", [(None, "1"), ("1", "2"), ("2", "3")]),  # numbers; a repeat is no change
    ("not json", "2", [(None, "2")]),
    ({"1": "2"}, "2", [(None, "2")]),
    (["1", None], "2", [(None, "2")]),
])
def test_adoption_imports_the_tag_as_a_chain_ending_at_the_alias(
        services: Services, tag: Any, alias: str, chain: list, caplog: pytest.LogCaptureFixture) -> None:
    reg = services.models
    _bare_versions(services, "m", 3)
    reg.client.set_registered_model_alias("m", CHAMPION, alias)
    if tag is not None:
        raw = tag if isinstance(tag, str) else json.dumps(tag)
        reg.client.set_registered_model_tag("m", HISTORY_TAG, raw)
    with caplog.at_level(logging.WARNING, logger="mlplatform.models.registry"):
        assert reg.champion("m") == alias
    history = reg.champion_history("m")
    assert _chain(history) == chain and {h.action for h in history} == {"adopt"}
    assert services.metadata.champion("m").change.id == history[-1].id  # type: ignore[union-attr]
    assert ("is not a JSON list of versions" in caplog.text) == (len(chain) == 1 and tag is not None)


def test_a_change_that_lands_between_read_and_write_wins(services: Services,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`models promote` reads the champion, checks the files, then sets: a promotion by
    another process in between makes it fail, changing nothing."""
    reg = services.models
    for seed in range(3):
        registered_version(services, "m", seed)
    reg.promote("m", "1")
    real_load = type(reg).load
    real_set_champion = type(reg).set_champion

    def load_then_someone_else_promotes(self, name: str, version: str):  # noqa: ANN001, ANN202
        out = real_load(self, name, version)
        if version == "3":
            # Another process: its change commits, then it mirrors the alias.
            real_set_champion(self, "m", "2", expected="1", action="promote", reason="run x", run_id="x")
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
    _settle(services, "m")  # long after the change: a stale alias now is damage, not a mirror under way
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
