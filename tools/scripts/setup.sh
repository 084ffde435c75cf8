#!/usr/bin/env bash
# Make sure the build and test dependencies are present; install only what is missing.
#
# Presence is decided per package by dpkg when it is available, and otherwise (or when dpkg
# does not know the package, e.g. a library built from source or a machine image without a
# package database) by probing for the commands, headers or files the build actually needs.
# apt-get is only called when something is missing, so machines without package access pass
# when everything is already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

log()  { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] warning: %s\n' "$*" >&2; }

# package | required or optional | probes, all must pass; "a|b" inside one probe means "a or b".
# Probe kinds: cmd:NAME (on PATH), inc:REL (header under an include root, or one directory
# below it, e.g. the multiarch dir), path:ABS (file or directory).
packages=(
  "build-essential      required cmd:gcc cmd:g++ cmd:make"
  "cmake                required cmd:cmake"
  "ninja-build          required cmd:ninja"
  "pkg-config           required cmd:pkg-config|cmd:pkgconf"
  "libopenblas-dev      required inc:cblas.h|inc:openblas/cblas.h"
  "libhdf5-dev          required inc:hdf5.h|inc:hdf5/serial/hdf5.h"
  "libsentencepiece-dev required inc:sentencepiece_processor.h"
  "sentencepiece        required cmd:spm_train"
  "libcli11-dev         required inc:CLI/CLI.hpp"
  "nlohmann-json3-dev   required inc:nlohmann/json.hpp"
  "libgtest-dev         required inc:gtest/gtest.h"
  "openmpi-bin          required cmd:mpirun"
  "libopenmpi-dev       required inc:mpi.h|cmd:mpicxx"
  "ccache               optional cmd:ccache"
  "python3.11-doc       optional path:/usr/share/doc/python3.11/html"
)

# Include roots: the compiler's defaults plus whatever the environment adds.
include_roots=(/usr/local/include /usr/include)
for var in CPATH CPLUS_INCLUDE_PATH C_INCLUDE_PATH; do
  IFS=':' read -r -a extra <<<"${!var:-}"
  include_roots=("${extra[@]}" "${include_roots[@]}")
done
IFS=':' read -r -a prefixes <<<"${CMAKE_PREFIX_PATH:-}"
for p in "${prefixes[@]}"; do [[ -n "$p" ]] && include_roots=("$p/include" "${include_roots[@]}"); done

have_header() {
  local rel="$1" dir hit
  for dir in "${include_roots[@]}"; do
    [[ -n "$dir" && -d "$dir" ]] || continue
    [[ -e "$dir/$rel" ]] && return 0
    for hit in "$dir"/*/"$rel"; do [[ -e "$hit" ]] && return 0; done
  done
  return 1
}

# One probe, with "|" alternatives.
probe() {
  local alt alts
  IFS='|' read -r -a alts <<<"$1"
  for alt in "${alts[@]}"; do
    case "$alt" in
      cmd:*)  command -v "${alt#cmd:}" >/dev/null 2>&1 && return 0 ;;
      inc:*)  have_header "${alt#inc:}" && return 0 ;;
      path:*) [[ -e "${alt#path:}" ]] && return 0 ;;
      *) warn "unknown probe '$alt'"; return 1 ;;
    esac
  done
  return 1
}

# Is the package (or what we need from it) present? dpkg first, then the probes.
is_present() {
  local pkg="$1" p
  shift
  if command -v dpkg-query >/dev/null 2>&1 &&
     [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]]; then
    return 0
  fi
  for p in "$@"; do probe "$p" || return 1; done
  return 0
}

missing_required=()
missing_optional=()
for entry in "${packages[@]}"; do
  read -r -a fields <<<"$entry"
  pkg="${fields[0]}" kind="${fields[1]}"
  if is_present "$pkg" "${fields[@]:2}"; then
    log "found $pkg"
  elif [[ "$kind" == required ]]; then
    log "missing $pkg"
    missing_required+=("$pkg")
  else
    log "missing $pkg (optional)"
    missing_optional+=("$pkg")
  fi
done

if (( ${#missing_required[@]} == 0 && ${#missing_optional[@]} == 0 )); then
  log "all dependencies present, nothing to do"
  exit 0
fi

# apt is usable when apt-get exists and we are root or can use sudo (never prompt in CI).
apt=()
if command -v apt-get >/dev/null 2>&1; then
  if (( EUID == 0 )); then
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  elif command -v sudo >/dev/null 2>&1; then
    sudo_flags=()
    [[ -t 0 ]] || sudo_flags=(-n)
    apt=(sudo "${sudo_flags[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
  fi
fi
# Short network timeouts: a machine without package access should fail fast, not hang.
apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20)

if (( ${#apt[@]} == 0 )); then
  if (( ${#missing_required[@]} > 0 )); then
    printf '[setup] error: missing required packages and apt-get is not usable here: %s\n' \
      "${missing_required[*]}" >&2
    printf '[setup] install them (or the equivalent headers/tools) and run again\n' >&2
    exit 1
  fi
  warn "optional packages missing, apt-get not usable, skipping: ${missing_optional[*]}"
  exit 0
fi

log "apt-get update"
if ! "${apt[@]}" "${apt_opts[@]}" update -qq; then
  if (( ${#missing_required[@]} > 0 )); then
    printf '[setup] error: apt-get update failed; missing required packages: %s\n' \
      "${missing_required[*]}" >&2
    exit 1
  fi
  warn "apt-get update failed, skipping optional packages: ${missing_optional[*]}"
  exit 0
fi

if (( ${#missing_required[@]} > 0 )); then
  log "installing ${missing_required[*]}"
  "${apt[@]}" "${apt_opts[@]}" install -y -q --no-install-recommends "${missing_required[@]}"
fi

# Optional packages one at a time, so one unavailable package does not block the others.
for pkg in "${missing_optional[@]}"; do
  log "installing $pkg (optional)"
  "${apt[@]}" "${apt_opts[@]}" install -y -q --no-install-recommends "$pkg" ||
    warn "could not install optional package $pkg, continuing"
done

log "done"
