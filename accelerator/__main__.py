"""``python -m accelops.accelerator``: print the chosen accelerator, why, and every probe's answer."""
from .real_accelerator import accelerator_selection, get_accelerator


def main() -> None:
    accelerator = get_accelerator()
    selection = accelerator_selection()
    print(f"accelerator: {accelerator.name} ({selection.how}: {selection.reason})")
    print(f"communication backend: {accelerator.communication_backend_name()}")
    print(f"devices: {accelerator.device_count()}, current: {accelerator.current_device_name()}")
    print(f"dtypes: {', '.join(str(dtype).replace('torch.', '') for dtype in accelerator.supported_dtypes())}")
    for row in selection.probes:
        print(f"  {row.name:<6} priority {row.priority:>3}  {'present' if row.present else 'absent ':<7}  {row.reason}")


if __name__ == "__main__":
    main()
