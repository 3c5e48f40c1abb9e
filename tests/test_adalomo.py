"""AdaLomo and LOMO: equal to lomo-optim on real tiny models, each toggle removes exactly its
component, gradient accumulation, exact checkpoint resume, closed-form state size."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from ablate.config.check import check
from ablate.config.variants import compose
from ablate.errors import ConfigError
from ablate.fused import OptimizerInBackward
from ablate.memory import optimizer_state_bytes
from ablate.optim import AdaLomo, Lomo
from ablate.train import Trainer
from conftest import assert_same_params, mean_loss, run_in_process, train

# After p - step an element can land near zero by cancellation, and its absolute error is
# then that of p: a few ulps of the largest weights (an ulp of 0.1 is 7.5e-9). A wrong
# update would be off by about a step, lr * RMS(p) * u ~ 1e-4: four orders above ATOL.
RTOL, ATOL = 1e-5, 1e-8


@pytest.fixture(autouse=True)
def cuda_is_cpu(monkeypatch):
    """lomo-optim creates its state with `.cuda()`; on this CPU that must be a no-op."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def compare_with_reference(cfg, make_reference, norm_pass: bool = False,
                           lockstep: bool = False) -> None:
    """Our trainer (its fused path) beside lomo-optim's own loop (`fused_backward`, with
    `grad_norm` first when it clips by norm) on the same init and batches; every parameter
    must match after the last step.

    `lockstep`: before each step our parameters are set to the reference's, and every step
    is compared. GPT-2 needs this: its fused q/k/v bias holds the key bias, whose gradient
    is zero in exact arithmetic (softmax ignores a constant added to every key), so in fp32
    it is rounding noise; AdaLomo divides it by its own RMS and steps by it as if it were
    signal. Two implementations that round differently therefore drift apart there in a
    few steps, whatever they compute; from the same parameters they agree.
    """
    ours = Trainer(cfg)
    theirs = Trainer(cfg)  # same seed, so the same init
    theirs.optimizer.remove_hooks()
    reference = make_reference(theirs.model)
    t = cfg.trainer
    losses = []
    for step in range(t.max_steps):
        if lockstep:
            ours.model.load_state_dict(theirs.model.state_dict())
        losses.append(ours.train_step().item())
        loss = mean_loss(theirs, theirs.task.train_batch(step, t.batch_size))
        if norm_pass:
            reference.grad_norm(loss)
        reference.fused_backward(loss, t.lr)
        if lockstep:
            assert_same_params(ours.model, theirs.model, rtol=RTOL, atol=ATOL)
    assert_same_params(ours.model, theirs.model, rtol=RTOL, atol=ATOL)
    assert losses[-1] < losses[0]


CONSTANT_LR = ("trainer.lr=0.01", "trainer.schedule=constant", "trainer.warmup_steps=0",
               "trainer.max_steps=5")


# ---------------------------------------------------------------- against lomo-optim
@pytest.mark.parametrize("model", ["llama_tiny", "gpt2_tiny"])
@pytest.mark.parametrize("variant", ["plain", "weight_decay", "clip_grad_norm"])
def test_fused_adalomo_equals_lomo_optim(tiny_cfg, model, variant):
    from lomo_optim import AdaLomo as ReferenceAdaLomo

    ours = {"plain": [], "weight_decay": ["optimizer.weight_decay=0.1"],
            "clip_grad_norm": ["trainer.clip_grad_norm=0.05"]}[variant]
    theirs = {"plain": {}, "weight_decay": {"weight_decay": 0.1},
              "clip_grad_norm": {"clip_grad_norm": 0.05}}[variant]
    cfg = tiny_cfg("optimizer=adalomo", f"model={model}", *CONSTANT_LR, *ours)
    compare_with_reference(cfg, lambda m: ReferenceAdaLomo(m, lr=0.01, **theirs),
                           norm_pass=variant == "clip_grad_norm", lockstep=model == "gpt2_tiny")


@pytest.mark.parametrize("model", ["llama_tiny", "gpt2_tiny"])
@pytest.mark.parametrize("variant", ["plain", "weight_decay_clip_value", "clip_grad_norm"])
def test_fused_lomo_equals_lomo_optim(tiny_cfg, model, variant):
    from lomo_optim import Lomo as ReferenceLomo

    ours = {"plain": [], "clip_grad_norm": ["trainer.clip_grad_norm=0.5"],
            "weight_decay_clip_value": ["optimizer.weight_decay=0.1",
                                        "optimizer.clip_grad_value=0.001"]}[variant]
    theirs = {"plain": {}, "clip_grad_norm": {"clip_grad_norm": 0.5},
              "weight_decay_clip_value": {"weight_decay": 0.1, "clip_grad_value": 0.001}}[variant]
    cfg = tiny_cfg("optimizer=lomo", f"model={model}", *CONSTANT_LR[1:], "trainer.lr=0.5", *ours)
    compare_with_reference(cfg, lambda m: ReferenceLomo(m, lr=0.5, **theirs),
                           norm_pass=variant == "clip_grad_norm")


def test_standalone_step_equals_lomo_optim_with_loss_scale_and_both_clips(tiny_cfg):
    """Outside the runner: named params, ordinary backward + step(), the optimizer's own
    global-norm clipping, value clipping (in the reference's order) and loss scaling."""
    from lomo_optim import AdaLomo as ReferenceAdaLomo

    options = dict(clip_grad_norm=0.05, clip_grad_value=1e-3, weight_decay=0.1)
    cfg = tiny_cfg("optimizer=adalomo", *CONSTANT_LR)
    ours, theirs = Trainer(cfg), Trainer(cfg)
    for trainer in (ours, theirs):
        trainer.optimizer.remove_hooks()
    opt = AdaLomo(ours.model.named_parameters(), lr=0.01, loss_scale=1024.0, **options)
    reference = ReferenceAdaLomo(theirs.model, lr=0.01, loss_scale=1024.0, **options)
    t = cfg.trainer
    for step in range(t.max_steps):
        batch = ours.task.train_batch(step, t.batch_size)
        (mean_loss(ours, batch) * 1024.0).backward()
        opt.step()
        assert all(p.grad is None for p in ours.model.parameters())  # consumed, as LOMO
        loss = mean_loss(theirs, batch)
        reference.grad_norm(loss)
        reference.fused_backward(loss, 0.01)
    assert_same_params(ours.model, theirs.model, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- fused = unfused
@pytest.mark.parametrize("optimizer", ["adalomo toggles=all", "adalomo toggles=no_adaptive_lr",
                                       "adalomo toggles=no_grouped_norm",
                                       "adalomo toggles=no_nmf", "lomo",
                                       "adalomo toggles=all model=gpt2_tiny",
                                       "adalomo toggles=global_norm",
                                       "adalomo toggles=global_norm trainer.clip_grad_norm=0.05",
                                       "adalomo optimizer.beta2=0.999"])
def test_fused_equals_unfused(tiny_cfg, optimizer):
    common = (f"optimizer={optimizer.split()[0]}", *optimizer.split()[1:],
              "optimizer.weight_decay=0.1")
    fused = train(tiny_cfg(*common, "toggles.fused_backward=true"))
    plain = train(tiny_cfg(*common, "toggles.fused_backward=false"))
    assert fused.losses == pytest.approx(plain.losses, rel=1e-6)
    assert_same_params(fused.model, plain.model, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- toggles
def textbook_adalomo(params: list[torch.Tensor], grads_at, steps: int, lrs: list[float],
                     adaptive_lr=True, grouped_norm=True, nmf=True, eps=(1e-30, 1e-3),
                     clip_threshold=1.0, decay_rate=-0.8, beta2=None, weight_decay=0.01) -> list:
    """The algorithm box written out plainly, one formula per line, nothing in place."""
    params = [p.detach().clone() for p in params]
    second = [None] * len(params)  # (r, c) or v
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    for t in range(1, steps + 1):
        beta2_t = 1 - t ** decay_rate if beta2 is None else beta2
        updates = []
        for i, g in enumerate(grads_at(params)):
            p = params[i]
            if adaptive_lr and nmf and p.dim() == 2:
                r_new, c_new = (g * g + eps[0]).mean(dim=1), (g * g + eps[0]).mean(dim=0)
                r, c = second[i] or (torch.zeros_like(r_new), torch.zeros_like(c_new))
                r, c = beta2_t * r + (1 - beta2_t) * r_new, beta2_t * c + (1 - beta2_t) * c_new
                second[i] = (r, c)
                u = g / torch.outer(r / r.mean(), c).sqrt()
            elif adaptive_lr:
                v = second[i] if second[i] is not None else torch.zeros_like(g)
                v = beta2_t * v + (1 - beta2_t) * (g * g + eps[0])
                second[i] = v
                u = g / v.sqrt()
            else:
                u = g
            updates.append(u)
        rms_all = rms(torch.cat([u.flatten() for u in updates]))
        for i, u in enumerate(updates):
            p = params[i]
            if grouped_norm == "global":
                u = u / max(1.0, rms_all / clip_threshold)
            elif grouped_norm:
                u = u / max(1.0, rms(u) / clip_threshold)
            lr = lrs[i] * max(eps[1], rms(p)) if grouped_norm else lrs[i]
            params[i] = p * (1 - lr * weight_decay) - lr * u
    return params


def toy_problem():
    """A linear regression: one weight matrix, one bias vector, a fresh batch per step."""
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(6, 4, generator=gen) * 0.1, torch.randn(6, generator=gen) * 0.1
    batches = iter([(torch.randn(8, 4, generator=gen), torch.randn(8, 6, generator=gen))
                    for _ in range(3)])

    def grads_at(params):
        x, y = next(batches)
        params = [p.detach().requires_grad_() for p in params]
        loss = ((x @ params[0].T + params[1] - y) ** 2).mean()
        return torch.autograd.grad(loss, params)
    return [w, b], grads_at


TOGGLES = {"all": {}, "no_adaptive_lr": {"adaptive_lr": False},
           "no_grouped_norm": {"grouped_norm": False}, "no_nmf": {"nmf": False}}


@pytest.mark.parametrize("preset", TOGGLES)
def test_each_toggle_equals_the_textbook_with_that_component_removed(preset):
    """Three steps of the toy problem, two param groups with different lr: ours against
    the algorithm box with exactly this component swapped out."""
    toggles = TOGGLES[preset]
    (w0, b0), grads_at = toy_problem()
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = AdaLomo([{"params": [w]}, {"params": [b], "lr": 0.05}], lr=0.1, weight_decay=0.01,
                  **toggles)
    for _ in range(3):
        w.grad, b.grad = grads_at([w, b])
        opt.step()
    expected = textbook_adalomo([w0, b0], toy_problem()[1], 3, [0.1, 0.05], **toggles)
    torch.testing.assert_close([w.detach(), b.detach()], expected, rtol=RTOL, atol=1e-7)
    if preset != "all":  # the component matters here: removing it changes the result
        whole = textbook_adalomo([w0, b0], toy_problem()[1], 3, [0.1, 0.05])
        assert not torch.allclose(expected[0], whole[0], rtol=1e-3)

    shapes = {name: tuple(s.shape) for name, s in opt.state[w].items() if torch.is_tensor(s)}
    if preset == "no_adaptive_lr":  # no second moment, so no state tensors at all
        assert shapes == {} and optimizer_state_bytes(opt) == 0
    elif preset == "no_nmf":
        assert shapes == {"exp_avg_sq": (6, 4)}
    else:
        assert shapes == {"exp_avg_sq_row": (6,), "exp_avg_sq_col": (4,)}


def two_layer_problem(clip_grad_norm=None):
    """Two nn.Linear layers with a tanh between, a fresh batch per step; the gradients the
    textbook gets are clipped by their global norm as torch.nn.utils.clip_grad_norm_ does."""
    gen = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    batches = [(torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen))
               for _ in range(4)]

    def loss_of(params, x, y):
        w1, b1, w2, b2 = params
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    def textbook_grads():
        batch = iter(batches)

        def grads_at(params):
            params = [p.detach().requires_grad_() for p in params]
            grads = torch.autograd.grad(loss_of(params, *next(batch)), params)
            if clip_grad_norm is None:
                return grads
            norm = torch.stack([g.norm() for g in grads]).norm()
            return [g * min(1.0, clip_grad_norm / (norm.item() + 1e-6)) for g in grads]
        return grads_at
    return model, batches, loss_of, textbook_grads


@pytest.mark.parametrize("path", ["step", "fused", "fused clip_grad_norm"])
def test_global_norm_equals_the_textbook_on_two_linear_layers(path):
    """One RMS over all four parameters' u (clip_threshold 0.5, so the clip acts), four
    steps; the fused backward gathers the sums in a first backward (and, with global norm
    clipping, the norm in one before it)."""
    clip = 0.1 if "clip" in path else None
    model, batches, loss_of, textbook_grads = two_layer_problem(clip)
    start = [p.detach().clone() for p in model.parameters()]
    options = dict(lr=0.1, weight_decay=0.01, clip_threshold=0.5)
    if path == "step":
        opt = AdaLomo(model.parameters(), grouped_norm="global", **options)
    else:
        opt = OptimizerInBackward(model.named_parameters(), lambda params: AdaLomo(
            params, grouped_norm="global", **options))
    for x, y in batches:
        loss = loss_of(list(model.parameters()), x, y)
        if path == "step":
            loss.backward()
            opt.step()
        else:
            opt.gather(loss, clip)
            loss.backward()
    expected = textbook_adalomo(start, textbook_grads(), 4, [0.1] * 4, grouped_norm="global",
                                clip_threshold=0.5)
    torch.testing.assert_close([p.detach() for p in model.parameters()], expected,
                               rtol=RTOL, atol=1e-7)
    grouped = textbook_adalomo(start, textbook_grads(), 4, [0.1] * 4, clip_threshold=0.5)
    assert not torch.allclose(expected[2], grouped[2], rtol=1e-3)


def test_constant_beta2_equals_the_textbook():
    (w0, b0), grads_at = toy_problem()
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = AdaLomo([w, b], lr=0.1, weight_decay=0.01, beta2=0.9)
    for _ in range(3):
        w.grad, b.grad = grads_at([w, b])
        opt.step()
    expected = textbook_adalomo([w0, b0], toy_problem()[1], 3, [0.1, 0.1], beta2=0.9)
    torch.testing.assert_close([w.detach(), b.detach()], expected, rtol=RTOL, atol=1e-7)
    scheduled = textbook_adalomo([w0, b0], toy_problem()[1], 3, [0.1, 0.1])
    assert not torch.allclose(expected[0], scheduled[0], rtol=1e-3)


def test_grouped_norm_values_and_global_norm_with_accumulation_are_one_line_errors():
    assert check(compose(["optimizer=adalomo", "toggles=global_norm"])) is None
    assert check(compose(["optimizer=adalomo", "toggles.grouped_norm=false"])) is None
    with pytest.raises(ConfigError, match=r"^optimizer=adalomo: grouped_norm='globl': "
                                          r"allowed are true, false, global$"):
        check(compose(["optimizer=adalomo", "toggles.grouped_norm=globl"]))
    with pytest.raises(ConfigError, match=r"grouped_norm=global .* trainer.grad_accum_steps=1"):
        check(compose(["optimizer=adalomo", "toggles=global_norm", "trainer.grad_accum_steps=2"]))
    assert check(compose(["optimizer=adalomo", "toggles=global_norm", "toggles.fused_backward=false",
                          "trainer.grad_accum_steps=2"])) is None


def test_no_grouped_norm_steps_by_exactly_lr_times_u():
    """First step (beta2 = 0): u = g / sqrt((r / mean r) outer c), and p moves by lr * u."""
    (w, _), grads_at = toy_problem()
    w = w.clone().requires_grad_()
    before = w.detach().clone()
    g = grads_at([w, torch.zeros(6)])[0]
    w.grad = g.clone()
    AdaLomo([w], lr=0.1, grouped_norm=False).step()
    r, c = (g * g + 1e-30).mean(1), (g * g + 1e-30).mean(0)
    u = g / torch.outer(r / r.mean(), c).sqrt()
    torch.testing.assert_close(before - w.detach(), 0.1 * u, rtol=1e-6, atol=0)


def test_toggle_of_another_optimizer_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"toggles\.nmf.*optimizer=adamw"):
        check(compose(["optimizer=adamw", "toggles=no_nmf"]))
    cfg = compose(["optimizer=adalomo", "toggles=[no_nmf,no_grouped_norm]",
                   "toggles.adaptive_lr=false"])
    assert (cfg.toggles.nmf, cfg.toggles.grouped_norm, cfg.toggles.adaptive_lr) == (False,) * 3
    with pytest.raises(ConfigError, match=r"optimizer=adalomo: decay_rate=0.5: must be <= 0"):
        check(compose(["optimizer=adalomo", "optimizer.decay_rate=0.5"]))


@pytest.mark.slow
def test_cli_sweep_over_the_toggle_presets_runs_four_jobs(tmp_path, tiny_args):
    code, _, err = run_in_process(tmp_path, "-m", "optimizer=adalomo",
                                  "toggles=all,no_adaptive_lr,no_grouped_norm,no_nmf",
                                  *tiny_args, "trainer.max_steps=5", "logger.wandb.mode=disabled")
    assert code == 0, err
    jobs = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/*/summary.json")]
    assert all(job["status"] == "completed" for job in jobs)
    state_gb = {frozenset(job["toggles"].items()): job["optimizer_state_gb"] for job in jobs}
    assert set(state_gb) == {frozenset({"fused_backward": True, **toggles}.items())
                             for toggles in TOGGLES.values()}
    assert state_gb[frozenset({"fused_backward": True, "adaptive_lr": False}.items())] == 0.0


# ---------------------------------------------------------------- the trainer's paths
@pytest.mark.parametrize("optimizer", ["adalomo", "lomo"])
@pytest.mark.parametrize("fused", ["true", "false"])
def test_grad_accumulation_equals_one_large_batch(tiny_cfg, optimizer, fused):
    common = (f"optimizer={optimizer}", f"toggles.fused_backward={fused}")
    small = train(tiny_cfg(*common, "trainer.batch_size=2", "trainer.grad_accum_steps=2"))
    large = train(tiny_cfg(*common, "trainer.batch_size=4", "trainer.grad_accum_steps=1"))
    assert small.losses == pytest.approx(large.losses, rel=1e-5)
    assert_same_params(small.model, large.model, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("optimizer", ["adalomo toggles=all", "adalomo toggles=no_adaptive_lr",
                                       "adalomo toggles=no_grouped_norm",
                                       "adalomo toggles=no_nmf", "lomo"])
def test_checkpoint_resume_equals_uninterrupted_run_exactly(tiny_cfg, optimizer):
    cfg = tiny_cfg(f"optimizer={optimizer.split()[0]}", *optimizer.split()[1:],
                   "trainer.max_steps=6")
    whole = train(cfg)
    first = train(cfg, steps=3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(cfg)  # a fresh model and optimizer
    resumed.load_state_dict(torch.load(buffer))
    assert optimizer_state_bytes(resumed.optimizer) == optimizer_state_bytes(first.optimizer)
    while resumed.step < 6:
        resumed.train_step()
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------- state size
@pytest.mark.parametrize("preset", ["all", "no_nmf", "no_adaptive_lr"])
def test_optimizer_state_gb_on_llama_60m_is_the_closed_form(cache_dir, preset):
    cfg = compose(["optimizer=adalomo", f"toggles={preset}", "model=llama_60m",
                   "task.vocab_size=512", f"task.cache_dir={cache_dir}", "trainer.seq_len=16",
                   "trainer.batch_size=1", "trainer.max_steps=1", "trainer.warmup_steps=0",
                   "trainer.eval_batches=1", "trainer.tgs_warmup_steps=0",
                   "logger.wandb.mode=disabled", "trainer.device=cpu", "trainer.progress=false"])
    summary = Trainer(cfg).fit(lambda record: None)
    m = cfg.model
    vocab, d, ff, layers = m.vocab_size, m.hidden_size, m.intermediate_size, m.num_layers
    # embeddings and lm_head (not tied in LLaMA); per layer q, k, v, o, gate, up, down;
    # vectors: two RMSNorms per layer and the final one.
    matrices = [(vocab, d)] * 2 + [(d, d)] * 4 * layers + [(ff, d)] * 2 * layers \
        + [(d, ff)] * layers
    vectors = d * (2 * layers + 1)
    closed_form = {"all": 4 * (sum(r + c for r, c in matrices) + vectors),
                   "no_nmf": 4 * (sum(r * c for r, c in matrices) + vectors),
                   "no_adaptive_lr": 0}[preset]
    assert summary["params_m"] * 1e6 == sum(r * c for r, c in matrices) + vectors
    assert summary["optimizer_state_gb"] == pytest.approx(closed_form / 1e9, rel=1e-12)
    assert math.isfinite(summary["final_train_loss"])


# ---------------------------------------------------------------- constructor
@pytest.mark.parametrize("cls, kwargs, message", [
    (AdaLomo, {"eps": (1e-30,)}, "eps="), (AdaLomo, {"clip_threshold": 0.0}, "clip_threshold="),
    (AdaLomo, {"decay_rate": 0.1}, "decay_rate="), (Lomo, {"lr": -1.0}, "lr="),
    (AdaLomo, {"beta2": 1.0}, "beta2="), (AdaLomo, {"grouped_norm": "yes"}, "grouped_norm="),
    (Lomo, {"clip_grad_norm": 0.0}, "clip_grad_norm="), (Lomo, {"loss_scale": 0.0}, "loss_scale="),
    (AdaLomo, {"clip_grad_value": -1.0}, "clip_grad_value="),
    (AdaLomo, {"weight_decay": -0.1}, "weight_decay="),
])
def test_bad_hyper_parameters_are_one_line_value_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        cls([torch.zeros(2, requires_grad=True)], **kwargs)
    assert "\n" not in str(info.value)
