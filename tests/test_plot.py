import pytest

from mlxvision.plot import plot_confusion_matrix, plot_history

pytest.importorskip("matplotlib")


def test_plots_are_real_pngs(tmp_path):
    history = [
        {
            "epoch": e,
            "loss": 1 / e,
            "accuracy": 0.5 + e / 10,
            "val_loss": 1.2 / e,
            "val_accuracy": 0.4 + e / 10,
        }
        for e in (1, 2, 3)
    ]
    curves = plot_history(history, tmp_path / "curves.png")
    confusion = plot_confusion_matrix([[3, 1], [2, 4]], ["a", "b"], tmp_path / "confusion.png")
    for path in (curves, confusion):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png"]


def test_bad_plot_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_history([], tmp_path / "x.png")
    with pytest.raises(
        ValueError, match=r"expected a 3×3 matrix for 3 classes, got shape \(2, 2\)"
    ):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
