"""The torch reference of one Adam/AdamW update, shared by the CPU Adam op's and the fused Adam op's
pure-torch paths."""


def adam_update_(p32, g32, m, v, step: float, lr: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float, decoupled: bool, bias_correction: bool) -> None:
    """Update float32 ``p32``, ``m`` and ``v`` in place from the float32 gradient ``g32``, in
    torch.optim.Adam/AdamW's order of operations (``decoupled``: AdamW's weight decay, else L2). ``step``
    is the count after this step (read only with ``bias_correction``)."""
    if weight_decay != 0.0:
        if decoupled:
            p32.mul_(1.0 - lr * weight_decay)
        else:
            g32 = g32.add(p32, alpha=weight_decay)
    m.lerp_(g32, 1.0 - beta1)
    v.mul_(beta2).addcmul_(g32, g32, value=1.0 - beta2)
    step_size, bc2_sqrt = lr, 1.0
    if bias_correction:
        step_size = lr / (1.0 - beta1**step)
        bc2_sqrt = (1.0 - beta2**step) ** 0.5
    p32.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-step_size)


def adam_rollback_(p32, g32, m, v, step: float, lr: float, beta1: float, beta2: float, eps: float,
                   weight_decay: float, decoupled: bool, bias_correction: bool) -> None:
    """Undo ``adam_update_`` run with the same arguments (``step`` is the count that update ran with): ``p32``,
    ``m`` and ``v`` return to their values before it, up to float32 rounding. Needs beta1 and beta2 > 0."""
    if beta1 == 0.0 or beta2 == 0.0:
        raise ValueError(f"cannot roll back an Adam step with beta1={beta1}, beta2={beta2}: a beta of 0 forgets the "
                         f"previous moments")
    step_size, bc2_sqrt = lr, 1.0
    if bias_correction:
        step_size = lr / (1.0 - beta1**step)
        bc2_sqrt = (1.0 - beta2**step) ** 0.5
    p32.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=step_size)
    if weight_decay != 0.0:
        if decoupled:
            p32.div_(1.0 - lr * weight_decay)
        else:
            g32 = g32.add(p32, alpha=weight_decay)  # the L2 term used the param before the step: restored above
    m.sub_(g32, alpha=1.0 - beta1).div_(beta1)
    v.addcmul_(g32, g32, value=-(1.0 - beta2)).div_(beta2)
