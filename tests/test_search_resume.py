"""Searches resumed after a worker was killed, dead workers' trials, study names per device.

The kills are real: a worker process SIGKILLs itself from inside its metric at a seeded
point (the n-th batch it evaluates in a given phase of a generation), leaving its trials
running in the journal and, in the add phase, the claim lock held."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import optuna
import pytest

import search
from ofa.space import SPACES
from search.objectives import Budget, Metric, mbv3_macs, mbv3_params
from search.problem import SearchSettings
from search.storage import WORKER, GenerationJournal, OwnedLock, StaleTrials, process_start, worker_id
from tests.test_search_engine import quiet_optuna  # noqa: F401 (autouse: Optuna quiet, as the app runs it)

SPACE = SPACES["ofa_mbv3_mnist"]
N = 160
BUDGETS = [Budget.of("30M", macs=30e6)]


KILLED_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, traceback
    import search
    from ofa.space import SPACES
    from search.objectives import Budget, Metric, mbv3_macs, mbv3_params

    space = SPACES["ofa_mbv3_mnist"]
    journal, log, phase, at, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    params = mbv3_params(space, direction="maximize")
    batches = []

    def params_or_die(archs):
        # the at-th batch this worker evaluates in `phase` (add_fixed: our own proposals, added
        # as running trials under the claim lock; put: claimed NSGA-II children) kills it
        if phase in {f.name for f in traceback.extract_stack()}:
            batches.append(len(archs))
            if len(batches) == at:
                with open(log, "w") as f:
                    json.dump(batches, f)
                os.kill(os.getpid(), signal.SIGKILL)
        return params.fn(archs)

    objectives = [Metric("params", params_or_die, "maximize"), mbv3_macs(space)]
    settings = search.SearchSettings(n, 20, 0, study_name="resume", storage=journal)
    search.run(space, objectives, settings, budgets=[Budget.of("30M", macs=30e6)])
    """
)


def objectives(calls: list | None = None) -> list[Metric]:
    params = mbv3_params(SPACE, direction="maximize")

    def recorded(archs):
        if calls is not None:
            calls.extend(a.key() for a in archs)
        return params.fn(archs)

    return [Metric("params", recorded, "maximize"), mbv3_macs(SPACE)]


def load(journal) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="resume", storage=storage)


def key_of(trial) -> str:
    genes = search.MBV3Genes(SPACE)
    return genes.decode(genes.canonical(genes.row_from_params(trial.params)[None])[0]).key()


@pytest.mark.parametrize("phase, at", [("add_fixed", 4), ("put", 3)])
def test_a_killed_search_resumes_to_exactly_n_trials_distinct_evaluations(tmp_path, phase, at):
    journal = tmp_path / "study.log"
    cmd = [sys.executable, "-c", KILLED_WORKER, str(journal), str(tmp_path / "log.json"), phase, str(at), str(N)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(json.loads((tmp_path / "log.json").read_text())) == at

    before = load(journal).get_trials(deepcopy=False)
    running = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    stored = {t.user_attrs["key"] for t in before if t.state.is_finished() and t.user_attrs.get("evaluated")}
    assert 0 < len(stored) < N
    if phase == "put":  # it died evaluating the NSGA-II children it had claimed: they stay running
        assert running and all(t.user_attrs.get(WORKER) for t in running)
    else:  # it died evaluating its own proposals, before adding them: the claim lock is still held
        assert os.path.islink(f"{journal}.claims.lock")

    calls: list[str] = []
    result = search.run(SPACE, objectives(calls), SearchSettings(N, 20, 0, study_name="resume", storage=str(journal)),
                        budgets=BUDGETS)  # fmt: skip
    assert result.n_evaluations == N and result.stopped == "reached n_trials"

    after = load(journal).get_trials(deepcopy=False)
    states = Counter(t.state for t in after)
    assert optuna.trial.TrialState.RUNNING not in states
    failed = [t for t in after if t.state == optuna.trial.TrialState.FAIL]
    assert sorted(t.number for t in failed) == sorted(t.number for t in running)  # the dead worker's, no other
    evaluated = [t.user_attrs["key"] for t in after if t.state.is_finished() and t.user_attrs.get("evaluated")]
    assert len(evaluated) == len(set(evaluated)) == N  # nothing lost, nothing twice
    assert set(evaluated) == {e.key for e in result.evaluations}
    assert len(calls) == len(set(calls)) == N - len(stored) and not set(calls) & stored
    # what the dead worker was evaluating was evaluated again, first
    retried = {t.user_attrs["key"] for t in after if t.user_attrs.get("origin") == "retry"}
    assert {key_of(t) for t in running if len(t.params) == search.MBV3Genes(SPACE).n_genes} - stored <= retried
    assert not os.path.lexists(f"{journal}.claims.lock")

    uninterrupted = search.run(SPACE, objectives(), SearchSettings(N, 20, 0), budgets=BUDGETS)
    assert uninterrupted.n_evaluations == result.n_evaluations


def test_running_trials_of_dead_workers_are_found_and_no_others():
    study = optuna.create_study(directions=["maximize"])
    me = worker_id()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = f"{worker_id().rsplit(':', 2)[0]}:{child.pid}:{process_start(child.pid)}"
    child.kill()
    child.wait()
    parent = f"{worker_id().rsplit(':', 2)[0]}:{os.getppid()}:{process_start(os.getppid())}"
    owners = {"mine": me, "live": parent, "dead": gone, "elsewhere": "another-host:1:1", "nobody": None}
    trials = {}
    for name, owner in owners.items():
        trials[name] = study.ask()
        if owner is not None:
            trials[name].set_user_attr(WORKER, owner)
    stale = StaleTrials(study, me, stale_after=0.0)

    def dead():
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        found = {d.number for d in stale.dead(running)}
        return {name for name, t in trials.items() if t.number in found}

    # A dead process of this host is known at once; another host's worker and a trial without
    # a worker only once nothing changed for `stale_after` seconds while watched.
    assert dead() == {"dead"}
    assert dead() == {"dead", "elsewhere", "nobody"}
    study.set_user_attr("heartbeat:another-host:1:1", 1.0)  # it beat: alive again
    assert dead() == {"dead", "nobody"}

    stale.fail([study.get_trials()[trials["dead"].number]])
    assert study.get_trials()[trials["dead"].number].state == optuna.trial.TrialState.FAIL
    assert study.get_trials()[trials["live"].number].state == optuna.trial.TrialState.RUNNING


def test_a_lock_left_by_a_dead_process_is_broken_at_once(tmp_path):
    path = str(tmp_path / "x.claims.lock")
    holder = textwrap.dedent(
        """
        import os, signal, sys
        from search.storage import OwnedLock
        OwnedLock(sys.argv[1]).__enter__()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", holder, path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and os.path.islink(path)
    with OwnedLock(path, grace_period=3600):  # a live owner would be waited for an hour
        assert os.readlink(path) == worker_id()
    assert not os.path.lexists(path)


def test_a_journal_killed_mid_write_is_written_again_at_once(tmp_path):
    journal = str(tmp_path / "study.log")
    holder = textwrap.dedent(
        """
        import os, signal, sys
        from search.storage import GenerationJournal
        GenerationJournal(sys.argv[1]).lock.acquire()  # as if killed inside append_logs
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", holder, journal], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and os.path.islink(journal + ".lock")
    writer = textwrap.dedent(
        """
        import sys
        import optuna
        from search.storage import GenerationJournal
        from optuna.storages.journal import JournalStorage
        backend = GenerationJournal(sys.argv[1])
        backend.lock.owned.grace_period = 3600  # only the dead owner's lock may be broken at once
        optuna.create_study(storage=JournalStorage(backend), study_name="again")
        """
    )
    proc = subprocess.run([sys.executable, "-c", writer, journal], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(journal + ".lock")
    names = [s.study_name for s in optuna.storages.JournalStorage(GenerationJournal(journal)).get_all_studies()]
    assert names == ["again"]


def test_two_devices_default_study_names_differ_and_a_shared_name_is_refused(tmp_path):
    storage = str(tmp_path / "s.log")
    runs = {d: search.run(SPACE, objectives(), SearchSettings(20, 10, 0, storage=storage, device=d)) for d in "ab"}
    names = {d: r.study_name for d, r in runs.items()}
    assert names["a"] != names["b"] and all(d in names[d] for d in "ab")
    assert all(SPACE.fingerprint() in n for n in names.values())
    studies = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)).get_all_studies()
    assert {s.study_name for s in studies} == set(names.values())
    with pytest.raises(ValueError, match="made for another device"):
        search.run(SPACE, objectives(), SearchSettings(20, 10, 0, storage=storage, device="b", study_name=names["a"]))
    with pytest.raises(ValueError, match="device = '' is not allowed"):
        SearchSettings(20, 10, device="")


def test_cli_killed_and_rerun_on_a_journal_ends_with_exactly_n_trials(shared_data, tmp_path):
    """`ofa-search-bench storage=<journal>` SIGKILLed once its journal holds 3,000 operations
    (mid-search), then rerun: exactly n_trials distinct cells evaluated, none running, as an
    uninterrupted run."""
    journal, n = tmp_path / "study.log", 1500
    cmd = [
        sys.executable, "-m", "app.search_bench", f"table={shared_data / 'nb201_accuracy_latency.csv'}",
        f"n_trials={n}", f"storage={journal}",
    ]  # fmt: skip
    first = subprocess.Popen([*cmd, f"out={tmp_path / 'first'}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while first.poll() is None and (not journal.exists() or journal.read_bytes().count(b"\n") < 3000):
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL, "the search ended before it was killed"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (name,) = [s.study_name for s in storage.get_all_studies()]
    evaluated = lambda trials: [t.user_attrs["key"] for t in trials if t.user_attrs.get("evaluated")]  # noqa: E731
    before = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    assert 0 < len(evaluated([t for t in before if t.state.is_finished()])) < n

    proc = subprocess.run([*cmd, f"out={tmp_path / 'second'}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["n_evaluations"] == n and summary["stopped"] == "reached n_trials"
    with open(tmp_path / "second" / "evaluated.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len({r["arch"] for r in rows}) == n
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    assert optuna.trial.TrialState.RUNNING not in {t.state for t in trials}
    keys = evaluated([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE])
    assert len(keys) == len(set(keys)) == n and set(keys) == {r["arch"] for r in rows}
