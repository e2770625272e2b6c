"""Figures: a reconstruction grid shows each sample's own pixels, in its row and column."""

from __future__ import annotations

import matplotlib.image
import numpy as np

from nopeek.plots import reconstruction_grid
from nopeek.plots._grids import _mosaic


def test_a_rows_mosaic_is_its_samples_side_by_side_with_white_gaps(rng):
    grey = rng.uniform(size=(3, 4, 5, 1)).astype(np.float32)
    tile = _mosaic(grey, gap=2)
    assert tile.shape == (4, 3 * 5 + 2 * 2, 3)
    for j in range(3):
        for c in range(3):  # grey shown on all three channels
            np.testing.assert_array_equal(tile[:, j * 7:j * 7 + 5, c], grey[j, ..., 0])
    np.testing.assert_array_equal(tile[:, 5:7], 1.0)
    np.testing.assert_array_equal(tile[:, 12:14], 1.0)

    colour = rng.uniform(-0.5, 1.5, size=(2, 3, 3, 3))  # outside [0, 1]: clipped, as imshow's range would
    np.testing.assert_array_equal(_mosaic(colour, gap=1)[:, 4:7], np.clip(colour[1], 0, 1).astype(np.float32))

    flat = rng.uniform(size=(2, 6))  # a tabular sample is a 1 x d strip
    strip = _mosaic(flat, gap=1)
    assert strip.shape == (1, 13, 3)
    np.testing.assert_allclose(strip[0, 7:, 0], flat[1], rtol=1e-6)


def test_reconstruction_grid_draws_every_row(tmp_path, rng):
    originals = np.zeros((16, 8, 8, 1))
    reconstructions = np.ones((20, 8, 8, 1))  # longer rows are cut to the shortest
    path = reconstruction_grid([originals, reconstructions], ["original", "reconstructed"], str(tmp_path / "g.png"))
    dark = (matplotlib.image.imread(path)[..., :3] < 0.05).all(axis=-1)[:, 150:]  # right of the row labels
    rows = np.flatnonzero(dark.any(axis=1))
    assert rows.size > 20 and np.all(np.diff(rows) == 1)  # one band of black: the originals' row
    middle = dark[rows[rows.size // 2]]
    assert np.count_nonzero(np.diff(middle.astype(int)) == 1) + middle[0] == 16  # 16 samples, gaps between
    assert not dark[rows[-1] + 1:].any()  # the white reconstructions below it


def test_a_comparison_draws_each_cut_of_a_sweep_as_its_own_line(tmp_path, monkeypatch):
    """`nopeek figures A B --out F.png`: a sweep of two cuts is two lines (never their mean,
    whose dots would be labelled as seeds), a sweep of one cut one line, named by its label."""
    from nopeek.plots import _sweep

    def row(cut, alpha, accuracy, topology="vanilla", party="client"):
        return {"topology": topology, "cut": cut, "party": party, "message": "z",
                "defense": "nopeek" if alpha else "none", "alpha": str(alpha),
                "diverged": "false", "collapsed": "false", "accuracy": str(accuracy), "dcor": "0.5",
                "best_classifier_accuracy": "0.3", "dcor_null95": "0.05", "dcor_label": "0.2"}

    drawn = {}
    monkeypatch.setattr(_sweep, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    two_cuts = [row("1", 0, 0.9), row("1", 1, 0.8), row("2", 0, 0.5), row("2", 1, 0.4)]
    vertical = [row("3", 0, 0.6, "vertical", "client1"), row("3", 0, 0.61, "vertical", "client2")]  # 2 messages
    many = {f"s{i}": [row("1", 0, i / 20)] for i in range(8)}  # past the ten colours: dashes
    _sweep.compare_figure({"study": two_cuts, "other": [row("1", 0, 0.7), row("1", 1, 0.6)],
                           "both": [row("1", 0, 0.3), row("1-2", 0, 0.2, topology="u_shaped")], "vfl": vertical, **many},
                          str(tmp_path / "c.png"))
    drawn_lines = [line for line in drawn["fig"].axes[0].get_lines() if not line.get_label().startswith("_")]
    lines = {line.get_label(): list(line.get_ydata()) for line in drawn_lines}
    assert lines == {"study cut 1": [0.9, 0.8], "study cut 2": [0.5, 0.4], "other": [0.7, 0.6],
                     "both vanilla cut 1": [0.3], "both u_shaped cut 1-2": [0.2], "vfl client1:z": [0.6],
                     "vfl client2:z": [0.61], **{f"s{i}": [i / 20] for i in range(8)}}
    styles = [(line.get_color(), line.get_linestyle()) for line in drawn_lines]
    assert len(set(styles)) == len(styles) == 15  # each line told apart
