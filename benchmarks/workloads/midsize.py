"""W3: a mid-size net, 784-512-512-10 ReLU on one batch of 256 random rows with
integer labels, softmax cross-entropy, SGD: jmlp.fit (manual and autodiff)
against a PyTorch eager loop from the same starting weights."""

import jax
import numpy as np

import jmlp

from .common import TORCH_PIN, flops_per_step, measure_many, note_row, ratio_row, timing_row, torch_mlp, torch_or_none

W = "W3"
MODEL = jmlp.MLP((784, 512, 512, 10), "relu")
BATCH, LR = 256, 0.01


def torch_loop(torch, params, x, y, steps):
    net = torch_mlp(torch, MODEL.sizes, "relu", params)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.tensor(x), torch.tensor(y).long()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return loss.item()


def run(steps=200, repeats=3, matmul=None):
    params = MODEL.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (BATCH, MODEL.sizes[0]))
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, MODEL.sizes[-1])
    x_np, y_np = np.asarray(x), np.asarray(y)
    flops = flops_per_step(MODEL.sizes, BATCH) * steps
    final = {}  # same start, same data: the last losses should agree to float32 rounding

    def fit(grad):
        def go():
            r = jmlp.fit(MODEL, params, x, y, loss="softmax_cross_entropy", optimizer="sgd", learning_rate=LR,
                         grad=grad, steps=steps)  # fmt: skip
            final[grad] = float(r.losses[-1])

        return go

    torch = torch_or_none()

    def eager():
        final["torch"] = torch_loop(torch, params, x_np, y_np, steps)

    fns = {"manual": fit("manual"), "autodiff": fit("autodiff")} | ({"torch": eager} if torch else {})
    t = measure_many(fns, repeats, warmups={"torch": lambda: torch_loop(torch, params, x_np, y_np, 5)})
    labels = {
        "manual": f"jmlp.fit grad=manual, {steps} steps",
        "autodiff": f"jmlp.fit grad=autodiff, {steps} steps",
        "torch": f"PyTorch {getattr(torch, '__version__', '')} eager, {torch and torch.get_num_threads()} threads",
    }
    rows = [timing_row(W, labels[k], v, steps, gflops=flops / v.median_s / 1e9) for k, v in t.items()]
    if torch is None:
        rows.append(note_row(W, "PyTorch eager loop", f"skipped: torch not installed ({TORCH_PIN})"))
    for grad in ("manual", "autodiff"):
        speedup = t["torch"].median_s / t[grad].median_s if "torch" in t else None
        rows.append(ratio_row(W, f"fit[{grad}] speed-up over PyTorch", speedup, at_least=1.2))
    manual_vs_auto = t["manual"].median_s / t["autodiff"].median_s
    rows.append(ratio_row(W, "time fit[manual] / fit[autodiff]", manual_vs_auto, at_most=1.05))
    if matmul:
        parts = [f"{k} {flops / v.median_s / 1e9 / matmul:.0%}" for k, v in t.items()]
        rows.append(note_row(W, "share of the 2048² matmul rate", ", ".join(parts), matmul_gflops=matmul))
    rows[0].data["final_losses"] = final
    return rows
