#!/usr/bin/env bash
# Install the Debian packages kwsearch uses, where we may: as root with apt-get available.
# Elsewhere print what is missing and carry on; nothing here is needed to import kwsearch.
#
#   install_system_packages.sh [EXTRA_PACKAGE ...]
#
# Always: dataset-fashion-mnist (the built-in data set). `make setup` (and so CI) adds chromium and
# chromium-driver: the report tests load the HTML report in headless Chromium.
set -euo pipefail
packages=(dataset-fashion-mnist "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install_system_packages: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install_system_packages: not root or no apt-get; please install: ${missing[*]}" >&2
  echo "  (without dataset-fashion-mnist, kwsearch downloads Fashion-MNIST on first use," >&2
  echo "   or reads it from \$KWSEARCH_DATA_DIR/fashion-mnist)" >&2
fi
