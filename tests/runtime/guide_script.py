"""DeepSpeed's getting-started loop, as written there, with only the import changed; run under torchrun
by test_engine_guide.py. Each rank writes ``<out_dir>/result-<rank>.json`` (losses, the loaded client state;
files because torchrun interleaves the ranks' stdout)."""
import argparse
import gc
import json

import torch

import accelops as deepspeed

parser = argparse.ArgumentParser()
parser.add_argument("--save_dir")
parser.add_argument("--out_dir")
parser.add_argument("--local_rank", type=int, default=-1)
parser = deepspeed.add_config_arguments(parser)
cmd_args = parser.parse_args()

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
params = [p for p in model.parameters() if p.requires_grad]
data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1))

model_engine, optimizer, data_loader, _ = deepspeed.initialize(args=cmd_args, model=model, model_parameters=params,
                                                               training_data=data)
client_sd, ckpt_id, losses = {}, "guide", []
for step, (x, y) in enumerate(data_loader):
    loss = torch.nn.functional.mse_loss(model_engine(x).float(), y)
    model_engine.backward(loss)
    model_engine.step()
    losses.append(loss.item())
    if step % 2:
        client_sd["step"] = step
        model_engine.save_checkpoint(cmd_args.save_dir, ckpt_id, client_sd=client_sd)
_, client_sd = model_engine.load_checkpoint(cmd_args.save_dir, ckpt_id)
result = {"rank": model_engine.global_rank, "losses": losses, "client_sd": client_sd,
          "optimizer": type(optimizer).__name__, "stage": model_engine.zero_optimization_stage(),
          "fp16": model_engine.fp16_enabled(), "steps": model_engine.global_steps}
with open(f"{cmd_args.out_dir}/result-{model_engine.global_rank}.json", "w") as handle:
    json.dump(result, handle)
# teardown of this harness: free the engine (and the communication work FSDP keeps) before the process group
del model_engine, optimizer, data_loader, model, params
gc.collect()
deepspeed.comm.destroy()
