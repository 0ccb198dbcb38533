#!/bin/sh
# Installs the Debian packages that the test suite starts for real, or names them.
# Each entry: <command or file that proves the package is there>:<Debian package>.
set -eu
NEEDED="
/usr/lib/postgresql:postgresql
/usr/lib/softhsm/libsofthsm2.so:softhsm2
pdfsig:poppler-utils
qpdf:qpdf
certutil:libnss3-tools
openssl:openssl
/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf:fonts-dejavu-core
/usr/sbin/clamd:clamav-daemon
gpg:gnupg
/usr/bin/chromium:chromium
node:nodejs
npm:npm
/usr/sbin/nginx:nginx
"
missing=""
for entry in $NEEDED; do
    probe=${entry%%:*}
    package=${entry#*:}
    if [ ! -e "$probe" ] && ! command -v "$probe" >/dev/null 2>&1; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
else
    echo "system-deps: missing Debian packages:$missing" >&2
    echo "system-deps: run as root: apt-get install$missing" >&2
    exit 1
fi
