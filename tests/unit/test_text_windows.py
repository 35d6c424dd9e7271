"""How a classifier reads a text longer than its max_length: windows that cover it."""

from transformer_pl.tasks.classify.predict import text_windows


def test_a_text_that_fits_is_its_own_window() -> None:
    assert text_windows([7, 8, 9], room=3) == [[7, 8, 9]]
    assert text_windows([7], room=3) == [[7]]
    assert text_windows([], room=3) == [[]]


def test_windows_are_full_length_and_the_last_is_aligned_to_the_end() -> None:
    assert text_windows(list(range(10)), room=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert text_windows(list(range(8)), room=4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert text_windows(list(range(5)), room=4) == [[0, 1, 2, 3], [1, 2, 3, 4]]


def test_every_id_is_read() -> None:
    ids = list(range(1000))
    windows = text_windows(ids, room=126)
    assert {i for window in windows for i in window} == set(ids)
    assert all(len(window) == 126 for window in windows)
