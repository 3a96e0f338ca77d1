"""The forecast (`Plan.due`) of the files store: from the times its plan already reads, a
microsecond either side of each horizon, files under a hold never counted."""

from __future__ import annotations

from datetime import timedelta

from lifecycle.stores import HORIZON_DAYS, Hold, RetentionWindow
from lifecycle.stores.files import FilesStore
from tests.stores.test_files import CUTOFF, ONE_US, files_policy, write

DAY = timedelta(days=1)


def test_due_files_a_microsecond_either_side_of_each_horizon_and_held_ones_never(tmp_path):
    write(tmp_path, "recordings/past.wav", CUTOFF - ONE_US)  # expired now: not due
    write(tmp_path, "recordings/at-cutoff.wav", CUTOFF)  # due within 7 days
    for days in HORIZON_DAYS:
        write(tmp_path, f"recordings/{days}-before.wav", CUTOFF + days * DAY - ONE_US)
        write(tmp_path, f"recordings/{days}-at.wav", CUTOFF + days * DAY)
    write(tmp_path, "recordings/held/soon.wav", CUTOFF + DAY)  # under a hold: never due
    write(tmp_path, "recordings/held/past.wav", CUTOFF - DAY)
    (tmp_path / "recordings/link.wav").symlink_to(tmp_path / "recordings/past.wav")
    store = FilesStore(files_policy(), str(tmp_path))
    hold = Hold(3, "*", "prefix", "recordings/held/", "legal_hold")

    plan = store.plan(RetentionWindow(CUTOFF, holds=(hold,)))

    assert (plan.expired, plan.held, plan.anomalies) == (1, 1, 1)
    assert plan.due == {"7": 2, "30": 4, "90": 6}
    assert store.plan(RetentionWindow(CUTOFF)).due == {"7": 3, "30": 5, "90": 7}
    # The same rule as the purge's: a horizon later, exactly those are expired.
    for days, due in plan.due.items():
        later = RetentionWindow(CUTOFF + int(days) * DAY, holds=(hold,))
        assert store.plan(later).expired == plan.expired + due


def test_an_empty_directory_is_due_nothing(tmp_path):
    (tmp_path / "recordings").mkdir()
    plan = FilesStore(files_policy(), str(tmp_path)).plan(RetentionWindow(CUTOFF))
    assert plan.due == {"7": 0, "30": 0, "90": 0}
