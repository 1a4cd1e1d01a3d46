"""``ds_report`` / ``python -m accelops``: the environment, the accelerator and every op's state.

The plain report compiles nothing and runs each external tool (nvcc or hipcc, the C++ compiler,
ninja) at most once with ``--version``. ``--verify`` builds or loads each compatible op and checks it
against torch; the exit status is 1 when an op fails or none could be checked, else 0. ``--json`` prints the same
facts as one JSON document (keys documented in the README).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Dict, List, Optional

JSON_SCHEMA_VERSION = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ds_report", description="accelops environment and op report")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.add_argument("--verify", action="store_true",
                        help="build or load each compatible op and check it against its torch reference")
    parser.add_argument("--hide_operator_status", action="store_true", help="leave out the op table (text only)")
    parser.add_argument("--hide_errors_and_warnings", action="store_true",
                        help="leave out reasons and warnings (text only)")
    return parser


def collect(verify: bool = False) -> Dict[str, Any]:
    """Every fact of the report as plain data; warnings raised while probing are kept, not printed. With
    ``verify`` the op rows are read again after the checks, so they show what the checks built."""
    from .environment import NUMPY_WARNING, environment_facts
    from .op_rows import op_rows

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts: Dict[str, Any] = {"schema": JSON_SCHEMA_VERSION, **environment_facts()}
        facts["build_info"] = _build_info()
        facts["ops"] = op_rows()
        if verify:
            from .verify import verify_ops

            facts["verify"] = verify_ops(facts["ops"])
            facts["ops"] = op_rows()  # the state after the checks: an op they built is cached now
    facts["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught
                                if not str(w.message).startswith(NUMPY_WARNING)})  # the numpy row says it
    return facts


def _build_info() -> Optional[dict]:
    try:
        from accelops.op_builder.prebuilt import read_build_info

        return read_build_info()
    except Exception as exc:
        return {"error": f"cannot read build_info.json: {exc}"}


def render_text(facts: Dict[str, Any], colour: bool, hide_ops: bool = False, hide_reasons: bool = False) -> List[str]:
    """The report's text lines for ``facts`` (as returned by ``collect``)."""
    from .text import Painter, build_info_lines, environment_lines, op_lines, verify_lines, warning_lines

    paint = Painter(colour)
    lines = environment_lines(facts, paint)
    if not hide_ops:
        lines += op_lines(facts["ops"], paint, show_reasons=not hide_reasons, after_verify="verify" in facts)
        lines += build_info_lines(facts["build_info"])
    if "verify" in facts:
        lines += verify_lines(facts["verify"], paint)
    if not hide_reasons:
        lines += warning_lines(facts["warnings"], paint)
    return lines


def verify_failed(facts: Dict[str, Any]) -> bool:
    """True when ``--verify`` ran and an op failed, or no op passed (nothing checked is not a pass)."""
    results = facts.get("verify")
    if results is None:
        return False
    return any(r["status"] == "FAIL" for r in results) or not any(r["status"] == "PASS" for r in results)


#: Exit status when the report cannot be written (stdout closed or full): sysexits' EX_IOERR.
EXIT_OUTPUT_ERROR = 74


def _output_failed(reason: str) -> int:
    """One line on stderr; stdout is pointed at the null device so that Python's final flush stays quiet."""
    sys.stderr.write(f"ds_report: cannot write the report to standard output: {reason}\n")
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return EXIT_OUTPUT_ERROR


def main(argv: Optional[List[str]] = None) -> int:
    """Print the report to stdout; returns the exit status: 1 when a verified op failed or none passed, 74
    (with one line on stderr) when stdout is closed or cannot be written, else 0."""
    from .text import use_colour

    args = _parser().parse_args(argv)
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        sys.stderr.write("ds_report: standard output is closed; redirect it to a file or a pipe\n")
        return EXIT_OUTPUT_ERROR
    facts = collect(verify=args.verify)
    if args.json:
        text = json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n"
    else:
        lines = render_text(facts, use_colour(sys.stdout), args.hide_operator_status, args.hide_errors_and_warnings)
        text = "\n".join(lines) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:  # a full disk (`>/dev/full`), a closed pipe, ...
        return _output_failed(exc.strerror or str(exc))
    return 1 if verify_failed(facts) else 0


if __name__ == "__main__":
    sys.exit(main())
