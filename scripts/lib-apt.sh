# Sourced by the setup scripts: installs one Debian package when a test dependency is missing.
#
#   apt_install <tag> <package> <present-command...>
#
# Does nothing when `<present-command...>` succeeds. Otherwise installs <package> with apt-get
# (as root, or through sudo when there is one), then runs the check again. On any failure it
# calls the caller's `fail "<message>"` (each script decides whether that stops `npm test`).
apt_install() {
  local tag="$1" package="$2"
  shift 2
  if "$@"; then return 0; fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      fail "$package is missing and this is not root: install it yourself (apt-get install -y $package)"
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    fail "$package is missing and there is no apt-get on this machine: install it"
    return 1
  fi
  echo "$tag: $package is missing; installing Debian's $package package" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null; }; then
    fail "apt-get install $package failed (see above)"
    return 1
  fi
  if ! "$@"; then
    fail "$package installed but still not found"
    return 1
  fi
  echo "$tag: installed $package" >&2
}
