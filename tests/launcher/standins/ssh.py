"""Stand-in ``ssh`` for the launcher tests: runs the "remote" command on this machine.

``ssh [OPTIONS] HOST [COMMAND...]``. Options are skipped (those that take a value skip it too).
A HOST whose name starts with ``down`` is unreachable: ssh's message, exit status 255. Otherwise
COMMAND (its words joined with spaces, as ssh does) runs as ``$SHELL -c COMMAND`` in the user's
home folder, in a session of its own, with the environment of a fresh login (``HOME``, ``USER``,
``LOGNAME``, ``SHELL``, ``LANG``, ``PATH=/usr/local/bin:/usr/bin:/bin``) plus
``STANDIN_SSH_HOST=HOST``; nothing else of the caller's environment.

Like ssh, it relays the command's stdout and stderr, passes its own stdin on (end of file
included), and does not signal the command when it dies itself: the command then sees end of file
on stdin and a broken pipe on output. Exit status: the command's (255 when a signal ended it).
When ``STANDIN_SSH_LOG`` is set, each call appends one line to that file:
``HOST<TAB>COMMAND<TAB>OPTIONS`` (the options joined with spaces).
"""
import os
import pwd
import subprocess
import sys
import threading

VALUE_OPTIONS = set("BbcDEeFIiJLlmOoPpQRSWw")


def split_args(argv):
    """``(options, host, command words)``: ssh's options are skipped."""
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "--":
        word = argv[index]
        for pos, letter in enumerate(word[1:], start=1):
            if letter in VALUE_OPTIONS:
                if pos == len(word) - 1:
                    index += 1  # the value is the next word
                break
        index += 1
    if index < len(argv) and argv[index] == "--":
        index += 1
    if index >= len(argv):
        sys.exit("usage: ssh [options] host [command]")
    return argv[:index], argv[index], argv[index + 1:]


def copy(src, dst):
    """Copy ``src`` to ``dst`` until end of file, then close ``dst`` (both raw file descriptors)."""
    try:
        while True:
            data = os.read(src, 65536)
            if not data:
                break
            os.write(dst, data)
    except OSError:
        pass
    finally:
        try:
            os.close(dst)
        except OSError:
            pass


def main():
    options, host, words = split_args(sys.argv[1:])
    command = " ".join(words)
    log = os.environ.get("STANDIN_SSH_LOG")
    if log:
        with open(log, "a") as fd:
            fd.write(f"{host}\t{command}\t{' '.join(options)}\n")
    if host.startswith("down"):
        print(f"ssh: connect to host {host} port 22: Connection refused", file=sys.stderr)
        return 255
    if not command:
        print("stand-in ssh: an interactive login is not supported", file=sys.stderr)
        return 255
    user = pwd.getpwuid(os.getuid())
    shell = user.pw_shell if os.path.exists(user.pw_shell or "") else "/bin/sh"
    env = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": shell,
           "LANG": os.environ.get("LANG", "C.UTF-8"), "PATH": "/usr/local/bin:/usr/bin:/bin", "STANDIN_SSH_HOST": host}
    proc = subprocess.Popen([shell, "-c", command], cwd=user.pw_dir, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    threading.Thread(target=copy, args=(0, os.dup(proc.stdin.fileno())), daemon=True).start()
    proc.stdin.close()
    relays = [threading.Thread(target=copy, args=(proc.stdout.fileno(), os.dup(1))),
              threading.Thread(target=copy, args=(proc.stderr.fileno(), os.dup(2)))]
    for relay in relays:
        relay.start()
    code = proc.wait()
    for relay in relays:
        relay.join()
    return 255 if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
