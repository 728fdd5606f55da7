#!/usr/bin/env bash
# The browser the web console's tests drive: Debian's chromium and chromium-driver (WebDriver), and a
# font with Chinese characters so screenshots of the console read. Installs them when missing (as root:
# apt-get); prints where chromedriver is.
set -euo pipefail
log() { echo "setup-browser: $*" >&2; }
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
fc-list 2>/dev/null | grep -qi 'wenquanyi\|noto sans cjk' || missing+=(fonts-wqy-microhei)
if (( ${#missing[@]} )); then
  log "installing ${missing[*]} from Debian"
  if [[ $(id -u) -ne 0 ]]; then echo "setup-browser: run as root to apt-get install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi
log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium does not start')"
echo "CHROMEDRIVER=/usr/bin/chromedriver"
