"""One rank of the 2-rank monitor test: ``python monitor_worker.py OUTPUT_PATH`` trains 3 optimizer steps with
csv_monitor writing under OUTPUT_PATH (the same folder on every rank), writes one client event, and prints
``{"rank", "enabled", "writers", "samples"}`` as JSON on its last stdout line."""
import json
import sys

import torch

import accelops


def main():
    output_path = sys.argv[1]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    config = {"train_batch_size": 8, "gradient_accumulation_steps": 2,
              "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "csv_monitor": {"enabled": True, "output_path": output_path, "job_name": "job"}}
    engine, *_ = accelops.initialize(model=model, config=config)
    rank = engine.global_rank
    gen = torch.Generator().manual_seed(rank)
    samples = []
    for _ in range(6):
        x, y = torch.randn(2, 4, generator=gen), torch.randn(2, 2, generator=gen)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        engine.step()
        samples.append(engine.global_samples)
    engine.monitor.write_events([("Client/rank", float(rank), 1)])
    result = {"rank": rank, "enabled": engine.monitor.enabled, "writers": len(engine.monitor.monitors),
              "samples": sorted(set(samples))}
    engine.destroy()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
