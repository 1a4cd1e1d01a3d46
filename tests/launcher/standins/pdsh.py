"""Stand-in ``pdsh`` for the launcher tests: what pdsh's ssh module does, with the stand-in ssh.

``pdsh [-S] [-b] [-f N] [-w HOST,...] [-l USER] [-t N] [-u N] [-R ssh] COMMAND...``. For each host,
in parallel: ``ssh [PDSH_SSH_ARGS_APPEND words] HOST COMMAND`` (``%h`` is the host, ``%%`` is ``%``),
in a session of its own, its stdin a pipe that this pdsh holds open and never writes (as pdsh's
socketpair), its lines copied to pdsh's stdout and stderr prefixed with ``HOST: ``. A host whose
ssh fails gets pdsh's ``pdsh@NAME: HOST: ssh exited with exit code N`` on stderr. Exit status with
``-S``: the largest of the hosts' exit statuses; without, 0. ``PDSH_RCMD_TYPE`` must be ``ssh``
(or unset). Dying (SIGTERM, SIGKILL) closes every ssh's stdin, as pdsh's end does.
"""
import os
import socket
import subprocess
import sys
import threading

VALUE_OPTIONS = {"-f", "-w", "-l", "-t", "-u", "-R", "-x", "-g", "-X", "-N"}


def expand(command, host):
    out, index = [], 0
    while index < len(command):
        char = command[index]
        if char == "%" and index + 1 < len(command) and command[index + 1] in "%h":
            out.append("%" if command[index + 1] == "%" else host)
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def main():
    argv, hosts, ret_rc, index = sys.argv[1:], [], False, 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index]
        if option == "-S":
            ret_rc = True
        elif option == "-w":
            hosts += argv[index + 1].split(",")
        elif option == "-R" and argv[index + 1] != "ssh":
            sys.exit("stand-in pdsh: only -R ssh")
        if option in VALUE_OPTIONS:
            index += 1
        index += 1
    command = " ".join(argv[index:])
    if os.environ.get("PDSH_RCMD_TYPE", "ssh") != "ssh":
        sys.exit("stand-in pdsh: only PDSH_RCMD_TYPE=ssh")
    if not hosts or not command:
        sys.exit("usage: pdsh [-S] -w HOSTS COMMAND")
    extra = os.environ.get("PDSH_SSH_ARGS_APPEND", "").split()
    lock, codes = threading.Lock(), {}

    def relay(stream, out, host):
        for line in iter(stream.readline, b""):
            with lock:
                out.write(f"{host}: ".encode() + line.rstrip(b"\n") + b"\n")
                out.flush()

    def run(host):
        proc = subprocess.Popen(["ssh", *extra, host, expand(command, host)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        threads = [threading.Thread(target=relay, args=(proc.stdout, sys.stdout.buffer, host)),
                   threading.Thread(target=relay, args=(proc.stderr, sys.stderr.buffer, host))]
        for thread in threads:
            thread.start()
        code = proc.wait()  # proc.stdin stays open until pdsh ends
        for thread in threads:
            thread.join()
        if code:
            with lock:
                sys.stderr.write(f"pdsh@{socket.gethostname()}: {host}: ssh exited with exit code {code}\n")
                sys.stderr.flush()
        codes[host] = code

    workers = [threading.Thread(target=run, args=(host,)) for host in hosts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return max(codes.values()) if ret_rc else 0


if __name__ == "__main__":
    sys.exit(main())
