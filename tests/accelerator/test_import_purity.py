"""Importing accelops does nothing: no vendor import, no process, no log record, no torch."""
import json
import os
import subprocess
import sys
import textwrap

VENDORS = ["torch_npu", "habana_frameworks", "intel_extension_for_pytorch", "oneccl_bindings_for_pytorch"]

PROBE = """
import json, logging, sys

events = []
def audit(event, args):
    if event in ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec", "os.spawn"):
        events.append(event)
sys.addaudithook(audit)

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger().addHandler(Keep(level=logging.DEBUG))
logging.getLogger().setLevel(logging.DEBUG)

import accelops, accelops.accelerator, accelops.comm, accelops.op_builder, accelops.ops, accelops.report  # noqa: E401
after_import = {"torch": "torch" in sys.modules, "vendors": [m for m in VENDORS if m in sys.modules]}
accelops.accelerator.get_accelerator().current_device_name()
after_select = [m for m in VENDORS if m in sys.modules]
print(json.dumps({"after_import": after_import, "after_select": after_select, "events": events, "records": records}))
"""


def test_import_and_cpu_selection_are_side_effect_free(tmp_path):
    # Importable vendor packages that would shout if imported: having one installed is not a device.
    for vendor in VENDORS:
        (tmp_path / vendor).mkdir()
        (tmp_path / vendor / "__init__.py").write_text("raise SystemExit('imported ' + __name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env["PYTHONPATH"] = str(tmp_path)
    code = f"VENDORS = {VENDORS!r}\n" + textwrap.dedent(PROBE)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == {"torch": False, "vendors": []}
    assert report["after_select"] == [], "CPU selection must not import the ccl bindings or any vendor stack"
    assert report["events"] == []
    assert report["records"] == []
    assert result.stderr == ""
