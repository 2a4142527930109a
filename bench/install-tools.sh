#!/usr/bin/env bash
# Install the system tools some modes of `python -m reactio.bench` and their tests need:
#   valgrind  `cost` mode and tests/test_cost.py (callgrind instruction counts)
#   strace    `pipeline` mode's system calls per message
#   openssl   the TLS tests' real peers (`openssl s_server` / `s_client`)
# Neither is a Python package, so `pip install '.[bench]'` cannot bring them.
#
# usage: bench/install-tools.sh            (as root, or with sudo available)
# Installs only what is missing; apt-get (Debian, Ubuntu) or dnf (Fedora, RHEL).
# Exit status 0 when the tools run afterwards.
set -euo pipefail

missing=()
for tool in valgrind strace openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-tools: valgrind, strace and openssl are installed"
    exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-tools: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
echo "install-tools: installing ${missing[*]}"
if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
elif command -v dnf >/dev/null 2>&1; then
    $SUDO dnf install -y -q "${missing[@]}"
else
    echo "install-tools: no apt-get or dnf here; install ${missing[*]} with your package manager" >&2
    exit 1
fi
valgrind --version
strace -V | head -1
openssl version
