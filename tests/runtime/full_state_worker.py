"""The worker case of ``test_utils_full_state.py`` (run through ``engine_workers.py``, kind ``full_state``).

One engine and one unsharded plain-torch copy of the same model train on the same global batches (the engine
over the ranks' micro-batches, the copy over the whole batch: the same mean gradient). The case reads the
engine's full gradients, parameters and Adam state with DeepSpeed's ``safe_get_full_*`` and returns their
largest differences from the copy's; then it sets one parameter, its gradient and its ``exp_avg`` with the
``safe_set_full_*`` setters (and the copy's the same way), reads them back, steps both once more and returns
the largest parameter difference: the setters must change what the optimizer uses, on every rank.
"""
import copy
import os

from engine_workers import client_optimizer, global_batch, make_model, micro_batch


def _max_diff(pairs):
    return max(float((a.detach().double() - b.detach().double()).abs().max()) for a, b in pairs)


def _set_values(shape, seed):
    import torch

    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def full_state_case(case):
    import torch

    import accelops as deepspeed  # as a DeepSpeed script does, through the package's attributes

    utils = deepspeed.utils
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    micro, lr = 2, case.get("lr", 0.01)
    model = make_model()
    plain = copy.deepcopy(model)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=lr, weight_decay=0.0)
    config = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": case["stage"]}}
    engine, *_ = deepspeed.initialize(model=model, config=config, optimizer=client_optimizer(case, model))
    params = dict(engine.module.named_parameters())
    plain_params = dict(plain.named_parameters())
    result = {"sharded": [type(p).__name__ == "DTensor" for p in params.values()],
              "unmanaged": utils.safe_get_full_fp32_param(torch.nn.Parameter(torch.ones(2))) is None,
              "state_before_step": None}
    try:
        utils.safe_get_full_optimizer_state(params["inp.weight"], "exp_avg")
    except KeyError as error:
        result["state_before_step"] = str(error)

    def backward(step):
        x, y = global_batch(step, micro * world)
        xb, yb = micro_batch(x, y, micro, world, rank, 0)
        engine.backward(torch.nn.functional.mse_loss(engine(xb), yb))
        torch.nn.functional.mse_loss(plain(x), y).backward()

    steps = case.get("steps", 2)
    for step in range(steps):
        backward(step)
        if step == steps - 1:
            result["grad_err"] = _max_diff((utils.safe_get_full_grad(p), plain_params[n].grad)
                                           for n, p in params.items())
        engine.step()
        plain_opt.step()
        plain_opt.zero_grad()
    result["grad_after_step"] = [utils.safe_get_full_grad(p) is None for p in params.values()]
    result["param_err"] = _max_diff((utils.safe_get_full_fp32_param(p), plain_params[n]) for n, p in params.items())
    for key in ("exp_avg", "exp_avg_sq"):
        result[f"{key}_err"] = _max_diff((utils.safe_get_full_optimizer_state(p, key), plain_opt.state[plain_params[n]][key])
                                         for n, p in params.items())
    try:
        utils.safe_get_full_optimizer_state(params["inp.weight"], "no_such_key")
    except KeyError as error:
        result["missing_key"] = str(error)

    # the setters: one more step with a parameter, its gradient and its exp_avg replaced on both sides
    name = case.get("set_param", "out.weight")
    target, twin = params[name], plain_params[name]
    new_param, new_grad, new_avg = (_set_values(twin.shape, seed) for seed in (1, 2, 3))
    backward(steps)
    utils.safe_set_full_fp32_param(target, new_param)
    utils.safe_set_full_grad(target, new_grad.flatten())  # DeepSpeed flattens the value: any shape of that size
    utils.safe_set_full_optimizer_state(target, new_avg, "exp_avg")
    with torch.no_grad():
        twin.copy_(new_param)
        twin.grad.copy_(new_grad)
        plain_opt.state[twin]["exp_avg"].copy_(new_avg)
    result["set_read_back_err"] = max(
        _max_diff([(utils.safe_get_full_fp32_param(target), new_param)]),
        _max_diff([(utils.safe_get_full_grad(target), new_grad)]),
        _max_diff([(utils.safe_get_full_optimizer_state(target, "exp_avg"), new_avg)]))
    engine.step()
    plain_opt.step()
    result["after_set_step_err"] = _max_diff((utils.safe_get_full_fp32_param(p), plain_params[n])
                                             for n, p in params.items())
    result["moved_by_set"] = _max_diff([(twin, new_param)])  # the step moved it: the comparison is not vacuous
    try:
        utils.safe_set_full_fp32_param(target, torch.zeros(3))
    except ValueError as error:
        result["bad_size"] = str(error)
    engine.destroy()
    return result
