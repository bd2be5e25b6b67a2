"""W4: scikit-learn's digits (80/20 split, standardized), 64-128-10 ReLU, Adam,
minibatch 64: one jmlp.sweep over 8 LRs x 4 seeds against scikit-learn's
MLPClassifier fitted on the same grid and split for about the same number of epochs."""

import dataclasses
import time
import warnings

import numpy as np

import jmlp
import jmlp.data

from .common import measure, note_row, optional, ratio_row, timing_row

W = "W4"
MODEL = jmlp.MLP((64, 128, 10), "relu")
BATCH = 64


def sklearn_grid(sk, d, lrs, seeds, epochs):
    """Validation accuracy per (lr, seed). alpha=0 (no L2) so both minimise the same loss;
    n_iter_no_change > max_iter so every fit runs all its epochs, as the sweep does."""
    acc = np.empty((len(lrs), len(seeds)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sk.exceptions.ConvergenceWarning)
        for i, lr in enumerate(lrs):
            for j, seed in enumerate(seeds):
                clf = sk.neural_network.MLPClassifier(
                    hidden_layer_sizes=(128,),
                    activation="relu",
                    solver="adam",
                    alpha=0.0,
                    batch_size=BATCH,
                    learning_rate_init=float(lr),
                    max_iter=epochs,
                    n_iter_no_change=epochs + 1,
                    random_state=int(seed),
                )
                acc[i, j] = clf.fit(d.x_train, d.y_train).score(d.x_val, d.y_val)
    return acc


def run(n_lrs=8, n_seeds=4, steps=1500, repeats=3):
    d = jmlp.data.load("digits", val_fraction=0.2, standardize=True)
    d = dataclasses.replace(d, x_train=d.x_train.astype(np.float32), x_val=d.x_val.astype(np.float32))
    lrs, seeds = np.geomspace(1e-4, 3e-2, n_lrs), list(range(n_seeds))
    epochs = max(1, round(steps / (len(d.x_train) // BATCH)))  # jmlp drops the last partial batch
    rows, out = [], {}

    def sweep():
        out["r"] = jmlp.sweep(
            MODEL,
            d.x_train,
            d.y_train,
            loss="softmax_cross_entropy",
            optimizer="adam",
            learning_rates=lrs,
            seeds=seeds,
            steps=steps,
            batch_size=BATCH,
            x_val=d.x_val,
            y_val=d.y_val,
        )

    t = measure(sweep, repeats)
    grid = f"{n_lrs} LRs x {n_seeds} seeds"
    rows.append(timing_row(W, f"jmlp.sweep, {grid}, {steps} steps of {BATCH} (~{epochs} epochs)", t))
    acc = out["r"].val_accuracy

    sk = optional("sklearn")
    if sk is None:
        rows.append(note_row(W, "scikit-learn MLPClassifier", "skipped: scikit-learn not installed"))
        return rows
    import sklearn.exceptions
    import sklearn.neural_network  # noqa: F401
    from threadpoolctl import threadpool_limits

    def probe(threads):  # a 5-epoch fit; also the warm-up
        with threadpool_limits(threads):
            t = time.perf_counter()
            sklearn_grid(sk, d, lrs[:1], seeds[:1], 5)
            return time.perf_counter() - t

    # Its BLAS calls are small (64-row batches): give it whichever thread count is faster here.
    threads = min((1, None), key=probe)

    def sk_grid():
        with threadpool_limits(threads):
            out["sk"] = sklearn_grid(sk, d, lrs, seeds, epochs)

    t_sk = measure(sk_grid, 1, warmup=lambda: None)
    rows.append(
        timing_row(
            W,
            f"scikit-learn {sk.__version__} MLPClassifier, same grid, {epochs} epochs, "
            f"BLAS threads {threads or 'default'} (once)",
            t_sk,
        )
    )
    rows.append(ratio_row(W, "sweep speed-up over scikit-learn (warm)", t_sk.median_s / t.median_s, at_least=10))
    rows.append(ratio_row(W, "sweep speed-up, compile included", t_sk.median_s / t.first_s))
    best, best_sk = float(np.max(acc)), float(np.max(out["sk"]))
    rows.append(
        ratio_row(
            W,
            f"best val accuracy {best:.4f} - scikit-learn's {best_sk:.4f}",
            best - best_sk,
            at_least=-0.005,
            unit="",
            jmlp=acc.tolist(),
            sklearn=out["sk"].tolist(),
            learning_rates=lrs.tolist(),
        )
    )
    return rows
