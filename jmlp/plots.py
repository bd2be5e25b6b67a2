"""PNG plots of a sweep (matplotlib, headless Agg backend)."""

import warnings

import numpy as np

FLOOR = 1e-12  # a log axis can't show an exact 0 (the seed's η = 1 lands on it): draw it here


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def loss_curves(result, path) -> None:
    """Train loss against step, one colour per learning rate, seeds as a min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(result.learning_rates)))
    steps = np.arange(1, result.losses.shape[-1] + 1)
    for i, lr in enumerate(result.learning_rates):
        curves = np.where(np.isfinite(result.losses[i]), np.maximum(result.losses[i], FLOOR), np.nan)
        if np.all(np.isnan(curves)):
            continue
        with warnings.catch_warnings():  # steps after every seed stopped are all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            middle = np.nanmedian(curves, axis=0)
            low, high = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        label = f"η={lr:.3g}" + (" (diverged)" if result.diverged[i].any() else "")
        ax.plot(steps, middle, color=colours[i], lw=1.4, label=label)
        if curves.shape[0] > 1:
            ax.fill_between(steps, low, high, color=colours[i], alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (before the step's update)")
    ax.set_title("Loss curves per learning rate (median over seeds, min-max band)")
    ax.legend(fontsize=7, ncol=2 if len(result.learning_rates) > 8 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def loss_vs_learning_rate(result, path) -> None:
    """Final train (and validation) loss against learning rate; diverged runs marked ×."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    lrs = result.learning_rates
    series = [("final train loss", result.final_loss, "C0")]
    if result.val_loss is not None:
        series.append(("validation loss", result.val_loss, "C1"))
    finite_max = 1.0
    for label, values, colour in series:
        ok = ~result.diverged & np.isfinite(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.array([values[i][ok[i]].mean() if ok[i].any() else np.nan for i in range(len(lrs))])
        ax.plot(lrs, np.maximum(mean, FLOOR), "o-", color=colour, label=f"{label} (mean over seeds)")
        for j in range(values.shape[1]):
            ax.scatter(lrs[ok[:, j]], np.maximum(values[ok[:, j], j], FLOOR), color=colour, s=8, alpha=0.4)
        if np.isfinite(mean).any():
            finite_max = max(finite_max, np.nanmax(mean))
    bad = result.diverged.any(axis=1)
    if bad.any():
        ax.scatter(lrs[bad], np.full(bad.sum(), finite_max * 3), marker="x", color="red", s=50, label="diverged")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"loss (values below {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title("Loss against learning rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
