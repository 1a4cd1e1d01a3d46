"""deepspeed.checkpointing (accelops.runtime.activation_checkpointing.checkpointing) and the
activation_checkpointing config section: gradients with checkpointing equal those without (dropout
replayed, RNG tracker states restored for recomputation), CPU checkpointing, DeepSpeed's argument and
output conventions, the RNG tracker and seeding, configure/is_configured/reset, the section's parsing and
an engine trained with and without checkpointing."""
import json

import pytest
import torch

import accelops
import accelops as deepspeed
from accelops.accelerator import reset_accelerator
from accelops.runtime.activation_checkpointing import checkpointing
from accelops.runtime.activation_checkpointing_config import ActivationCheckpointingConfig
from accelops.runtime.config import load_config
from accelops.runtime.errors import ConfigError

D = 16


@pytest.fixture(autouse=True)
def fresh_module(monkeypatch):
    """Unconfigured, on the CPU accelerator (the tracker then forks the CPU generator these tests draw from)."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    reset_accelerator()
    checkpointing._unconfigure()
    state = torch.get_rng_state()
    yield
    checkpointing._unconfigure()
    torch.set_rng_state(state)
    reset_accelerator()


class Block(torch.nn.Module):
    """A small transformer block with dropout in attention, after attention and in the MLP; optionally
    a dropout drawn from the model-parallel RNG tracker (as Megatron does in its parallel regions)."""

    def __init__(self, tracker_dropout=False):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.attn = torch.nn.MultiheadAttention(D, 2, dropout=0.2, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(D, 4 * D), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(4 * D, D))
        self.drop = torch.nn.Dropout(0.25)
        self.tracker_dropout = tracker_dropout

    def forward(self, x):
        h = self.norm1(x)
        attn, _ = self.attn(h, h, h, need_weights=False)
        x = x + self.drop(attn)
        h = self.mlp(self.norm2(x))
        if self.tracker_dropout:
            with checkpointing.get_cuda_rng_tracker().fork():
                h = self.drop(h)
        return x + h


class Stack(torch.nn.Module):
    def __init__(self, layers=3, use_checkpoint=False, tracker_dropout=False):
        super().__init__()
        self.layers = torch.nn.ModuleList(Block(tracker_dropout) for _ in range(layers))
        self.use_checkpoint = use_checkpoint

    def forward(self, x):
        for layer in self.layers:
            x = deepspeed.checkpointing.checkpoint(layer, x) if self.use_checkpoint else layer(x)
        return x


def run(model, x, use_checkpoint, seed=7):
    """Loss, input gradient and parameter gradients of one forward/backward from RNG seed ``seed``."""
    model.use_checkpoint = use_checkpoint
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    loss = model(x).square().mean()
    loss.backward()
    after = torch.rand(4)  # the RNG stream continues as it would without checkpointing
    return loss.detach(), x.grad, [p.grad.clone() for p in model.parameters()], after


def assert_same(a, b):
    loss_a, grad_a, params_a, after_a = a
    loss_b, grad_b, params_b, after_b = b
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(after_a, after_b)
    assert torch.equal(grad_a, grad_b)  # the same kernels run again: bit for bit in fp32 on the CPU
    for pa, pb in zip(params_a, params_b):
        assert torch.equal(pa, pb)


def make(tracker_dropout=False, train=True):
    torch.manual_seed(0)
    model = Stack(tracker_dropout=tracker_dropout).train(train)
    return model, torch.randn(2, 5, D)


# ---------------------------------------------------------------------------------------------- gradients
def test_gradients_equal_without_dropout():
    model, x = make(train=False)
    assert_same(run(model, x, False), run(model, x, True))


def test_dropout_is_replayed_exactly():
    model, x = make()
    plain, checkpointed = run(model, x, False), run(model, x, True)
    assert_same(plain, checkpointed)
    assert not torch.equal(run(model, x, False, seed=8)[0], plain[0])  # dropout does draw from the RNG


def test_tracker_states_are_restored_for_recomputation():
    model, x = make(tracker_dropout=True)
    checkpointing.model_parallel_cuda_manual_seed(1234)
    plain = run(model, x, False)
    plain_states = checkpointing.get_cuda_rng_tracker().get_states()
    checkpointing.model_parallel_cuda_manual_seed(1234)
    checkpointed = run(model, x, True)
    assert_same(plain, checkpointed)
    # backward's recomputation leaves the tracker where the forward left it
    states = checkpointing.get_cuda_rng_tracker().get_states()
    assert torch.equal(states["model-parallel-rng"], plain_states["model-parallel-rng"])


def test_tracker_dropout_differs_without_the_restore(monkeypatch):
    """Without putting the tracker's forward states back, recomputation draws other masks: the restore
    is what makes the test above pass."""
    model, x = make(tracker_dropout=True)
    checkpointing.model_parallel_cuda_manual_seed(1234)
    plain = run(model, x, False)
    from contextlib import nullcontext
    monkeypatch.setattr(checkpointing, "_context_fn", lambda *a: lambda: (nullcontext(), nullcontext()))
    checkpointing.model_parallel_cuda_manual_seed(1234)
    broken = run(model, x, True)
    assert torch.equal(plain[0], broken[0])
    assert not torch.allclose(plain[1], broken[1])


def test_a_second_backward_recomputes_again():
    model, x = make(tracker_dropout=True)
    checkpointing.model_parallel_cuda_manual_seed(1234)
    model.use_checkpoint = True
    x = x.clone().requires_grad_()
    torch.manual_seed(3)
    loss = model(x).square().mean()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    loss.backward()
    assert torch.equal(first, x.grad)


def test_gradient_through_parameters_when_no_input_requires_grad():
    torch.manual_seed(0)
    layer = torch.nn.Linear(D, D)
    x = torch.randn(3, D)
    deepspeed.checkpointing.checkpoint(layer, x).sum().backward()
    checkpointed = layer.weight.grad.clone()
    layer.weight.grad = None
    layer(x).sum().backward()
    assert torch.equal(checkpointed, layer.weight.grad)


def test_no_grad_runs_the_function_once():
    calls = []

    def function(x):
        calls.append(1)
        return x * 2

    with torch.no_grad():
        out = deepspeed.checkpointing.checkpoint(function, torch.ones(3, requires_grad=True))
    assert calls == [1] and not out.requires_grad and torch.equal(out, torch.full((3,), 2.0))


# ---------------------------------------------------------------------------------------------- CPU checkpointing
def test_checkpoint_in_cpu_gives_the_same_gradients_and_packs_the_inputs(monkeypatch):
    packed = []
    original = checkpointing._pack_to_cpu

    def recording(tensor):
        packed.append((tuple(tensor.shape), tensor.dtype))
        return original(tensor)

    model, x = make()
    plain = run(model, x, False)
    deepspeed.checkpointing.configure(None, checkpoint_in_cpu=True)
    monkeypatch.setattr(checkpointing, "_pack_to_cpu", recording)
    checkpointed = run(model, x, True)
    assert_same(plain, checkpointed)
    # exactly the checkpoints' inputs go through the hook: one hidden state per layer, nothing else
    assert packed == [((2, 5, D), torch.float32)] * 3


def test_checkpoint_in_cpu_copies_and_restores(monkeypatch):
    """The whole copy path on this machine: every float tensor counts as offloadable, so the checkpoints'
    inputs are copied out at forward and back for recomputation."""
    copies = []
    original = checkpointing._to_host

    def recording(tensor):
        copies.append(original(tensor))
        return copies[-1]

    model, x = make()
    plain = run(model, x, False)
    deepspeed.checkpointing.configure(None, checkpoint_in_cpu=True)
    monkeypatch.setattr(checkpointing, "_offloaded", lambda tensor: tensor.is_floating_point())
    monkeypatch.setattr(checkpointing, "_to_host", recording)
    assert_same(plain, run(model, x, True))
    assert [tuple(c.shape) for c in copies] == [(2, 5, D)] * 3


def test_cpu_pack_keeps_cpu_and_non_float_tensors_and_moves_device_tensors(monkeypatch):
    cpu = torch.ones(3)
    assert not checkpointing._offloaded(cpu) and checkpointing._pack_to_cpu(cpu) is cpu
    assert checkpointing._unpack_from_cpu(cpu) is cpu
    if not torch.cuda.is_available():
        return
    on_device = torch.arange(6.0, device="cuda").view(2, 3)
    device, host = checkpointing._pack_to_cpu(on_device)
    assert host.device.type == "cpu" and host.is_pinned() and torch.equal(host, on_device.cpu())
    back = checkpointing._unpack_from_cpu((device, host))
    assert back.device == on_device.device and torch.equal(back, on_device)
    mask = torch.ones(3, dtype=torch.bool, device="cuda")
    assert checkpointing._pack_to_cpu(mask) is mask


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_in_cpu_frees_device_memory():
    torch.manual_seed(0)
    layer = torch.nn.Linear(1024, 1024).cuda()
    source = torch.randn(1024, 1024, device="cuda", requires_grad=True)
    size = source.numel() * source.element_size()

    def held(cpu):
        deepspeed.checkpointing.configure(None, checkpoint_in_cpu=cpu)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        hidden = source * 2  # an activation that only the checkpoint keeps
        out = deepspeed.checkpointing.checkpoint(layer, hidden)
        del hidden
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - before
        out.sum().backward()
        grad = source.grad.clone()
        source.grad = None
        del out
        return kept, grad

    kept_device, grad_device = held(False)
    kept_cpu, grad_cpu = held(True)
    assert kept_device - kept_cpu == size
    assert torch.equal(grad_device, grad_cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cpu_checkpointing", [False, True])
def test_tracker_dropout_is_replayed_on_cuda(monkeypatch, cpu_checkpointing):
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    reset_accelerator()
    model, x = make(tracker_dropout=True)
    model, x = model.cuda(), x.cuda()
    checkpointing.model_parallel_cuda_manual_seed(1234)
    plain = run(model, x, False)
    deepspeed.checkpointing.configure(None, checkpoint_in_cpu=cpu_checkpointing)
    checkpointing.model_parallel_cuda_manual_seed(1234)
    checkpointed = run(model, x, True)
    torch.testing.assert_close(plain[0], checkpointed[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(plain[1], checkpointed[1], rtol=1e-5, atol=1e-7)
    for a, b in zip(plain[2], checkpointed[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------- arguments and outputs
def test_non_tensor_and_keyword_arguments_pass_through():
    torch.manual_seed(0)
    layer = torch.nn.Linear(D, D)

    def function(x, scale, mode, extra, *, offset, bias):
        assert mode == "relu" and extra is None
        return torch.relu(layer(x) * scale + offset) + bias

    x = torch.randn(4, D, requires_grad=True)
    bias = torch.randn(D, requires_grad=True)
    out = deepspeed.checkpointing.checkpoint(function, x, 3, "relu", None, offset=0.5, bias=bias)
    out.sum().backward()
    got = (x.grad.clone(), bias.grad.clone(), layer.weight.grad.clone())
    x.grad = bias.grad = layer.weight.grad = None
    function(x, 3, "relu", None, offset=0.5, bias=bias).sum().backward()
    for a, b in zip(got, (x.grad, bias.grad, layer.weight.grad)):
        assert torch.equal(a, b)


def test_multiple_outputs_follow_deepspeed():
    x = torch.randn(3, requires_grad=True)

    def several(v):
        return v * 2, v.sum(), "tag", torch.tensor([1, 2])

    a, b, tag, ints = deepspeed.checkpointing.checkpoint(several, x)
    assert tag == "tag" and ints.dtype == torch.int64 and not ints.requires_grad
    (a.sum() + 3 * b).backward()
    assert torch.equal(x.grad, torch.full((3,), 5.0))
    one = deepspeed.checkpointing.checkpoint(lambda v: [v + 1], x)  # a one-item sequence: the item
    assert isinstance(one, torch.Tensor)
    pair = deepspeed.checkpointing.checkpoint(lambda v: [v, v], x)
    assert isinstance(pair, tuple) and len(pair) == 2
    assert deepspeed.checkpointing.non_reentrant_checkpoint(lambda v: (v * 2,), x).shape == (3,)
    assert deepspeed.checkpointing.non_reentrant_checkpoint is not deepspeed.checkpointing.checkpoint


def test_checkpoint_function_apply_fills_all_outputs():
    x = torch.randn(3, requires_grad=True)
    all_outputs = []
    returned = deepspeed.checkpointing.CheckpointFunction.apply(lambda v: (v * 3, "x"), all_outputs, x)
    assert len(all_outputs) == 2 and all_outputs[1] == "x" and len(returned) == 1
    returned[0].sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 3.0))
    with pytest.raises(TypeError, match="must be a list"):
        deepspeed.checkpointing.CheckpointFunction.apply(lambda v: v, (), x)


def test_a_non_callable_is_a_clear_error():
    with pytest.raises(TypeError, match="first argument must be the function to run"):
        deepspeed.checkpointing.checkpoint(torch.ones(2), torch.ones(2))


# ---------------------------------------------------------------------------------------------- RNG tracker and seeding
def test_tracker_fork_gives_reproducible_streams():
    tracker = deepspeed.checkpointing.get_cuda_rng_tracker()
    tracker.add("a", 123)
    torch.manual_seed(5)
    with tracker.fork("a"):
        first = torch.rand(4)
    with tracker.fork("a"):
        second = torch.rand(4)
    outside = torch.rand(4)
    torch.manual_seed(5)
    assert torch.equal(outside, torch.rand(4))  # the default stream does not see the forks
    assert not torch.equal(first, second)  # each fork continues the tracked stream
    torch.manual_seed(123)
    assert torch.equal(torch.cat([first, second]), torch.rand(8))
    saved = tracker.get_states()
    with tracker.fork("a"):
        third = torch.rand(4)
    tracker.set_states(saved)
    with tracker.fork("a"):
        assert torch.equal(torch.rand(4), third)
    tracker.reset()
    assert tracker.get_states() == {}
    tracker.add("a", 123)  # after reset the name and the seed are free again


def test_tracker_errors():
    tracker = deepspeed.checkpointing.get_cuda_rng_tracker()
    tracker.add("a", 1)
    with pytest.raises(ValueError, match="seed 1 is already tracked"):
        tracker.add("b", 1)
    with pytest.raises(ValueError, match="'a' is already tracked"):
        tracker.add("a", 2)
    with pytest.raises(ValueError, match=r"'model-parallel-rng' is not tracked \(tracked: 'a'\)"):
        with tracker.fork():
            pass
    with pytest.raises(TypeError, match="seed must be an integer"):
        tracker.add("c", "7")
    with pytest.raises(TypeError, match="dict that get_states returned"):
        tracker.set_states([])


def test_model_parallel_cuda_manual_seed():
    deepspeed.checkpointing.model_parallel_cuda_manual_seed(1000)
    default = torch.rand(4)
    with deepspeed.checkpointing.get_cuda_rng_tracker().fork():
        tracked = torch.rand(4)
    torch.manual_seed(1000)
    assert torch.equal(default, torch.rand(4))
    torch.manual_seed(1000 + 2718)  # model-parallel rank 0
    assert torch.equal(tracked, torch.rand(4))
    deepspeed.checkpointing.model_parallel_cuda_manual_seed(1000)  # resets the tracker first: no error
    deepspeed.checkpointing.model_parallel_reconfigure_tp_seed(5)
    with deepspeed.checkpointing.get_cuda_rng_tracker().fork():
        reseeded = torch.rand(4)
    torch.manual_seed(5 + 2718)
    assert torch.equal(reseeded, torch.rand(4))


# ---------------------------------------------------------------------------------------------- configure
class MPU:
    def __init__(self, size):
        self.size = size

    def get_model_parallel_world_size(self):
        return self.size

    def get_model_parallel_rank(self):
        return 0

    def get_model_parallel_group(self):
        return None

    def get_data_parallel_rank(self):
        return 0


def flags():
    c = checkpointing
    return (c.PARTITION_ACTIVATIONS, c.CONTIGUOUS_CHECKPOINTING, c.num_layers, c.CPU_CHECKPOINT, c.SYNCHRONIZE,
            c.PROFILE_TIME)


def test_is_configured_and_reset():
    assert deepspeed.checkpointing.is_configured() is False
    deepspeed.checkpointing.configure(None)
    assert deepspeed.checkpointing.is_configured() is True
    assert flags() == (False, False, None, False, False, False)
    deepspeed.checkpointing.configure(None, checkpoint_in_cpu=True)
    deepspeed.checkpointing.reset()
    assert deepspeed.checkpointing.is_configured() and checkpointing.CPU_CHECKPOINT  # reset keeps the options
    deepspeed.checkpointing.configure(None)  # a new configure starts from the defaults, as in DeepSpeed
    assert checkpointing.CPU_CHECKPOINT is False


def test_configure_from_config_with_arguments_overriding(tmp_path):
    section = {"partition_activations": True, "contiguous_memory_optimization": True, "number_checkpoints": 4,
               "cpu_checkpointing": True, "synchronize_checkpoint_boundary": True, "profile": True}
    config = {"train_batch_size": 8, "activation_checkpointing": section}
    deepspeed.checkpointing.configure(None, deepspeed_config=config)
    assert flags() == (True, True, 4, True, True, True)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    deepspeed.checkpointing.configure(MPU(1), deepspeed_config=str(path), checkpoint_in_cpu=False, profile=False,
                                      num_checkpoints=2)
    assert flags() == (True, True, 2, False, True, False)
    assert checkpointing.mpu is not None and checkpointing.mp_size == 1
    deepspeed.checkpointing.configure(None, deepspeed_config=load_config(config, 1))
    assert flags() == (True, True, 4, True, True, True)
    assert checkpointing.mpu is not None  # None keeps the mpu given before, as in DeepSpeed
    deepspeed.checkpointing.configure(None, deepspeed_config={"train_batch_size": 8})
    assert flags() == (False, False, None, False, False, False)


def test_configure_bad_inputs():
    configure = deepspeed.checkpointing.configure
    with pytest.raises(ValueError, match="model-parallel world size is 2; accelops has no model parallelism"):
        configure(MPU(2))
    with pytest.raises(ValueError, match="mpu_ must be None or a model-parallel unit"):
        configure(object())
    with pytest.raises(ValueError, match="contiguous checkpointing works only with partitioned activations"):
        configure(None, contiguous_checkpointing=True, num_checkpoints=2)
    with pytest.raises(ValueError, match="contiguous checkpointing needs the number of checkpoints"):
        configure(None, partition_activations=True, contiguous_checkpointing=True)
    with pytest.raises(ValueError, match="checkpoint_in_cpu must be True, False or None, got 1"):
        configure(None, checkpoint_in_cpu=1)
    with pytest.raises(ValueError, match="num_checkpoints must be a positive integer"):
        configure(None, num_checkpoints=0)
    with pytest.raises(ConfigError, match="activation_checkpointing.cpu_checkpointing must be true or false"):
        configure(None, deepspeed_config={"activation_checkpointing": {"cpu_checkpointing": "yes"}})
    with pytest.raises(ConfigError, match="not an existing file"):
        configure(None, deepspeed_config="/no/such/ds_config.json")
    assert not deepspeed.checkpointing.is_configured()  # nothing was applied by the failed calls


def test_partition_and_contiguous_change_nothing_here():
    model, x = make()
    plain = run(model, x, False)
    deepspeed.checkpointing.configure(MPU(1), partition_activations=True, contiguous_checkpointing=True,
                                      num_checkpoints=3, synchronize=True, profile=True)
    assert_same(plain, run(model, x, True))


def test_profile_logs_forward_and_recomputation(caplog):
    deepspeed.checkpointing.configure(None, profile=True)
    x = torch.randn(3, requires_grad=True)
    with caplog.at_level("INFO", logger="accelops"):
        deepspeed.checkpointing.checkpoint(torch.sin, x).sum().backward()
    text = caplog.text
    assert "activation checkpointing: forward took" in text
    assert "activation checkpointing: recomputation took" in text


# ---------------------------------------------------------------------------------------------- the config section
def test_section_defaults_and_values():
    assert load_config({"train_batch_size": 2}, 1).activation_checkpointing == ActivationCheckpointingConfig()
    config = load_config({"train_batch_size": 2, "activation_checkpointing": {
        "partition_activations": True, "contiguous_memory_optimization": False, "cpu_checkpointing": True,
        "number_checkpoints": 24, "synchronize_checkpoint_boundary": False, "profile": True}}, 1)
    assert config.activation_checkpointing == ActivationCheckpointingConfig(
        partition_activations=True, cpu_checkpointing=True, number_checkpoints=24, profile=True)
    assert not any(path.startswith("activation_checkpointing") for path in config.no_effect)
    assert load_config({"train_batch_size": 2, "activation_checkpointing": {"number_checkpoints": None}},
                       1).activation_checkpointing.number_checkpoints is None


@pytest.mark.parametrize("section, expected", [
    ({"partition_activations": 1}, "activation_checkpointing.partition_activations must be true or false"),
    ({"cpu_checkpointing": "true"}, "activation_checkpointing.cpu_checkpointing must be true or false"),
    ({"number_checkpoints": 0}, "activation_checkpointing.number_checkpoints must be an integer >= 1"),
    ({"number_checkpoints": 2.5}, "activation_checkpointing.number_checkpoints must be an integer >= 1"),
    ({"profile": None}, "activation_checkpointing.profile must be true or false"),
    ({"partitioned_activations": True}, "activation_checkpointing.partitioned_activations is not a known key; "
                                        "the closest known key is 'partition_activations'"),
    ([], "activation_checkpointing must be an object"),
])
def test_section_bad_values_name_the_key(section, expected):
    with pytest.raises(ConfigError) as caught:
        load_config({"train_batch_size": 2, "activation_checkpointing": section}, 1)
    assert str(caught.value).startswith(expected)


# ---------------------------------------------------------------------------------------------- the package
def test_reachable_as_deepspeed_checkpointing():
    import accelops.runtime.activation_checkpointing as package
    assert accelops.checkpointing is checkpointing is package.checkpointing
    assert "checkpointing" in dir(accelops)
    for name in ("configure", "checkpoint", "is_configured", "reset", "get_cuda_rng_tracker",
                 "model_parallel_cuda_manual_seed", "non_reentrant_checkpoint", "CheckpointFunction"):
        assert callable(getattr(accelops.checkpointing, name)), name


# ---------------------------------------------------------------------------------------------- the engine
def engine_losses(use_checkpoint, steps=3):
    torch.manual_seed(0)
    model = Stack(layers=2)
    model.head = torch.nn.Linear(D, 1)
    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "activation_checkpointing": {"partition_activations": False, "cpu_checkpointing": True,
                                           "number_checkpoints": 2}}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    deepspeed.checkpointing.configure(None, deepspeed_config=engine.config)
    assert checkpointing.CPU_CHECKPOINT and checkpointing.num_layers == 2
    engine.module.use_checkpoint = use_checkpoint
    losses = []
    data = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    for _ in range(steps):
        x = torch.randn(2, 5, D, generator=data)
        loss = engine.module.head(engine(x)).square().mean()
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    engine.destroy()
    return losses


@pytest.mark.usefixtures("world_of_one")
def test_engine_trains_the_same_losses_with_and_without_checkpointing():
    plain = engine_losses(False)
    checkpointed = engine_losses(True)
    assert len(set(plain)) == 3  # it trains
    assert checkpointed == plain
