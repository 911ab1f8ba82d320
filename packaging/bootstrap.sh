#!/usr/bin/env bash
# Make a fresh Debian/Ubuntu machine ready for MIKU-PAL: system libraries, .venv, the project.
# Idempotent and quick when nothing changed (a stamp file records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
EXTRAS=${MIKUPAL_EXTRAS:-dev,cluster}
DEB_PKGS=(ffmpeg libvlc5 vlc-plugin-base vlc-plugin-video-output xvfb xauth espeak-ng sox
  libxcb-icccm4 libxcb-cursor0 libxkbcommon-x11-0 libegl1 libgl1 libxcb-keysyms1 libxcb-image0
  libxcb-render-util0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0 libxcb-xkb1 libfontconfig1 libdbus-1-3)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.mikupal-installed
want=$(cat pyproject.toml packaging/constraints.txt | sha256sum | cut -c1-16)-$EXTRAS
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing MIKU-PAL into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned, so no other package drags in a different build.
  .venv/bin/python -m pip install -q -c packaging/constraints.txt torch torchvision
  .venv/bin/python -m pip install -q -c packaging/constraints.txt -e ".[$EXTRAS]"
  # The speaker encoder (GE2E weights inside the wheel) without its sdist-only `webrtcvad`
  # requirement: webrtcvad-wheels (a dependency above) provides the same module, and
  # librosa/scipy/torch are dependencies of MIKU-PAL already.
  .venv/bin/python -m pip install -q --no-deps "resemblyzer==0.1.4"
  echo "$want" > "$stamp"
fi
