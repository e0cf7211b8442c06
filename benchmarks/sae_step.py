"""One training step of a top-k dictionary against its one dense product.

The step of a topk / batchtopk / matryoshka_batchtopk dictionary needs one dense matrix product,
the encoder's pre-activations x [batch, d_in] @ W_enc [d_in, d_sae] (2 * d_in * d_sae FLOP per
token, 5.3 MFLOP at d_in 576, d_sae 4,608); everything else touches the k selected latents per
token (`core.sae.sparse`), the AuxK latents, or the weights once (Adam). This script times, on the
same inputs and interleaved so that a shared machine's load falls on all alike:

- the dense product alone (the baseline; GFLOP/s of the machine),
- the full training step as `Trainer.train_step` runs it (forward, backward, decoder-gradient
  projection, gradient clipping, Adam, decoder renormalization, reading the losses), on the
  sparse path and on the old dense autograd path (`sparse_training = False`),
- the step's parts (forward, backward, optimizer), to show how far the step is from the product,
- the encoder's sparse backward (dW_enc from the selected entries) by the numba kernel and by
  torch's sparse CSR x dense product (MKL), the two ways measured;
- with `--clt-layers L`, a cross-layer transcoder's step (`core.sae.clt`) over L layers against its
  L dense encoder products ([batch, d_in] @ [d_in, d_sae] per layer, d_sae features per layer), for
  topk, batchtopk and jumprelu (its thresholds set so that about k features per token and layer fire).

    python benchmarks/sae_step.py                     # d_in 576, d_sae 4608, k 32, batch 4096, 1% dead
    python benchmarks/sae_step.py --dead-fraction 0.05 --threads 1
    python benchmarks/sae_step.py --device cuda --dtype bfloat16
    python benchmarks/sae_step.py --architectures --clt-layers 6 --no-dense --repeats 3   # CLT rows only
    python benchmarks/sae_step.py --smoke          # seconds: d_in 64, d_sae 256, k 8, batch 256, one repeat, CLT of 2

Target: the sparse step costs at most 2x the dense product (a CLT's: its L products).

OpenMP's waiting threads spin by default; on a machine shared with other jobs a spinning thread
holds the core its partner needs, and every small parallel op of a step (Adam's, the losses')
waits a scheduler time slice: the step measured 3.8x the product that way, 1.6x with
OMP_WAIT_POLICY=PASSIVE, on the same loaded machine minutes apart. This script sets PASSIVE unless
the variable is set (`OMP_WAIT_POLICY=ACTIVE python benchmarks/sae_step.py` to see the difference).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import SAEConfig  # noqa: E402
from core.sae import CrossLayerTranscoder, SparseAutoencoder, create_dictionary  # noqa: E402
from core.sae.sparse import rows_of, scatter_add_rows  # noqa: E402


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


class Step:
    """`Trainer.train_step`'s work on one dictionary (without its data and logging)."""

    def __init__(self, sae: "SparseAutoencoder | CrossLayerTranscoder", dead_mask: torch.Tensor,
                 target: torch.Tensor | None = None):
        self.sae, self.dead_mask = sae, dead_mask
        self.kwargs = {} if target is None else {"target": target}
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=4e-4, betas=(0.9, 0.999), fused=True)  # as the Trainer's
        self.parts = {"forward": [], "backward": [], "optimizer": []}

    def __call__(self, x: torch.Tensor, device: str) -> None:
        sae, parts = self.sae, self.parts
        out = None

        def forward():
            nonlocal out
            self.optimizer.zero_grad(set_to_none=True)
            out = sae.training_forward(x, dead_mask=self.dead_mask, **self.kwargs)

        def backward():
            out.loss.backward()

        def optimizer():
            sae.remove_gradient_parallel_to_decoder_directions()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            self.optimizer.step()
            sae.set_decoder_norm_to_unit_norm()
            (out.fire_counts > 0).sum().item(), out.loss.item(), out.l0.item()  # the tracker and the logs

        for name, fn in (("forward", forward), ("backward", backward), ("optimizer", optimizer)):
            parts[name].append(timed(fn, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dead-fraction", type=float, default=0.01,
                        help="fraction of latents marked dead, so that AuxK runs (default 0.01)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--architectures", nargs="*", default=["topk", "batchtopk", "matryoshka_batchtopk"])
    parser.add_argument("--clt-layers", type=int, default=0, help="also time a cross-layer transcoder over this many "
                                                                  "layers (d_sae features per layer)")
    parser.add_argument("--clt-architectures", nargs="+", default=["topk", "batchtopk", "jumprelu"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-dense", action="store_true", help="skip the (slow) old dense path")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 keeps a shared machine's scheduling out")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: d_in 64, d_sae 256, k 8, batch 256, one repeat, a CLT over 2 layers")
    args = parser.parse_args()
    if args.smoke:
        args.d_in, args.d_sae, args.k, args.batch, args.repeats, args.clt_layers = 64, 256, 8, 256, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, getattr(torch, args.dtype)
    B, d_in, d_sae, k = args.batch, args.d_in, args.d_sae, args.k
    torch.manual_seed(0)
    x = torch.randn(B, d_in, device=device, dtype=dtype)
    n_dead = round(args.dead_fraction * d_sae)
    dead_mask = torch.zeros(d_sae, dtype=torch.bool, device=device)
    dead_mask[torch.randperm(d_sae)[:n_dead].to(device)] = True
    product_flop = 2 * B * d_in * d_sae
    print(f"device {device} ({torch.get_num_threads()} CPU threads of {os.cpu_count()}, OMP_WAIT_POLICY "
          f"{os.environ['OMP_WAIT_POLICY']}; load average {os.getloadavg()[0]:.1f} at the start), {args.dtype}; "
          f"d_in {d_in}, d_sae {d_sae}, k {k}, batch {B}; {n_dead} dead latents (AuxK on); median (and best) "
          f"of {args.repeats} interleaved repeats")

    for architecture in args.architectures:
        cfg = SAEConfig(architecture=architecture, d_sae=d_sae, k=k)
        sae = create_dictionary(cfg, d_in, hook_name="bench", model_name="bench", device=device, dtype=dtype)
        W_enc, out = sae.W_enc.detach().clone(), torch.empty(B, d_sae, device=device, dtype=dtype)
        compare(architecture, sae, Step, x, dead_mask, lambda: torch.matmul(x, W_enc, out=out),
                "dense product x @ W_enc", product_flop, args)

    if args.clt_layers:
        L = args.clt_layers
        x_layers = torch.randn(B, L, d_in, device=device, dtype=dtype)
        target = torch.randn(B, L, d_in, device=device, dtype=dtype)
        clt_dead = torch.zeros(L * d_sae, dtype=torch.bool, device=device)
        clt_dead[torch.randperm(L * d_sae)[:round(args.dead_fraction * L * d_sae)].to(device)] = True
        print(f"\ncross-layer transcoders over {L} layers: {d_sae} features per layer, x and targets [{B}, {L}, "
              f"{d_in}]; {int(clt_dead.sum())} dead features")
        for architecture in args.clt_architectures:
            cfg = SAEConfig(architecture=architecture, d_sae=d_sae, k=k)
            clt = CrossLayerTranscoder(cfg, d_in, layers=range(L), model_name="bench", device=device, dtype=dtype)
            if architecture == "jumprelu":
                set_thresholds_for_l0(clt, x_layers, k)
            inputs = x_layers.transpose(0, 1).contiguous()
            W_enc, out = clt.W_enc.detach().clone(), torch.empty(L, B, d_sae, device=device, dtype=dtype)

            def products():
                for i in range(L):
                    torch.matmul(inputs[i], W_enc[i], out=out[i])

            compare(f"CLT {architecture} ({L} layers)", clt, lambda m, d: Step(m, d, target), x_layers, clt_dead,
                    products, f"{L} dense products x_l @ W_enc[l]", L * product_flop, args)

    if device == "cpu" and dtype == torch.float32:
        encoder_backward_comparison(x, k, d_sae)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


def compare(title: str, model, make_step, x: torch.Tensor, dead_mask: torch.Tensor, product, product_name: str,
            product_flop: float, args) -> None:
    """Time `product` (the dense products alone) and the model's training step (sparse, and the dense
    path unless --no-dense), interleaved, and print them."""
    device = args.device
    steps = {"sparse": make_step(model, dead_mask)}
    if not args.no_dense:
        dense = copy.deepcopy(model)
        dense.sparse_training = False
        steps["dense"] = make_step(dense, dead_mask)
    times_product = []
    for repeat in range(args.repeats + 1):  # the first round warms up (kernels compile, caches fill)
        p = timed(product, device)  # the product alone: no allocation
        for step in steps.values():
            step(x, device)
        if repeat:
            times_product.append(p)
        else:
            for step in steps.values():
                for times in step.parts.values():
                    times.clear()
    t_product, best_product = statistics.median(times_product), min(times_product)
    print(f"\n{title}")
    print(f"  {product_name:25s} {t_product * 1e3:7.1f} ms (best {best_product * 1e3:6.1f})   "
          f"{product_flop / t_product / 1e9:6.1f} GFLOP/s")
    for name, step in steps.items():
        totals = [sum(parts) for parts in zip(*step.parts.values())]
        t_step, best_step = statistics.median(totals), min(totals)
        split = ", ".join(f"{part} {statistics.median(times) * 1e3:.0f}" for part, times in step.parts.items())
        print(f"  {name + ' step':25s} {t_step * 1e3:7.1f} ms (best {best_step * 1e3:6.1f}) = "
              f"{t_step / t_product:5.2f}x the product (best {best_step / best_product:4.2f}x); "
              f"{product_flop / t_step / 1e9:5.1f} GFLOP/s of the product's work; {split} ms")
        if name == "sparse":
            sparse_step = t_step
        else:
            print(f"  the sparse step is {t_step / sparse_step:.1f}x faster than the dense path")
    print(f"  how close to the physical limit: the product is {t_product / sparse_step:.0%} of the sparse step; "
          f"the rest is the selection, the sparse products over k latents per token, AuxK, and the "
          f"optimizer's passes over the weights (Adam, clipping, decoder norms)")


@torch.no_grad()
def set_thresholds_for_l0(clt: CrossLayerTranscoder, x: torch.Tensor, k: int) -> None:
    """jumprelu: each feature's threshold at the quantile of its pre-activations on x [batch, L, d_in]
    above which k of a layer's d_sae features fire per token on average (a trained CLT's sparsity;
    at initialization about half of them would)."""
    rank = max(1, round((1 - k / clt.d_sae) * x.shape[0]))
    for i in range(clt.n_layers):
        pre = x[:, i] @ clt.W_enc[i] + clt.b_enc[i]
        clt.log_threshold[i].copy_(pre.float().kthvalue(rank, dim=0).values.clamp_min(1e-3).log())


def encoder_backward_comparison(x: torch.Tensor, k: int, d_sae: int) -> None:
    """dW_enc^T [d_sae, d_in] from batch * k entries: numba scatter vs torch sparse CSR @ dense (MKL)."""
    B = x.shape[0]
    latents = torch.randint(0, d_sae, (B * k,))
    rows = rows_of(torch.arange(0, B * k + 1, k))
    grad = torch.randn(B * k)
    order = latents.argsort()

    def kernel():
        scatter_add_rows(torch.zeros(d_sae, x.shape[1]), latents, grad, x, rows)

    def csr():
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(latents, minlength=d_sae).cumsum(0)])
        g_t = torch.sparse_csr_tensor(crow, rows[order], grad[order], size=(d_sae, B))
        torch.sparse.mm(g_t, x)

    times = {}
    for name, fn in (("numba scatter kernel", kernel), ("torch sparse CSR x dense (MKL)", csr)):
        fn()
        times[name] = statistics.median(timed(fn, "cpu") for _ in range(5))
    print(f"\nencoder backward dW_enc from {B * k:,} entries: " +
          ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in times.items()))


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    main()
