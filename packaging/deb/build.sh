#!/usr/bin/env bash
# Build the nfrx .deb from a checkout: a self-contained virtual environment in /opt/nfrx, the
# systemd units, the example environment files, man pages and completions.
#
#   packaging/deb/build.sh [OUTPUT_DIR]          (default OUTPUT_DIR: dist/ in the checkout)
#
# Needs: dpkg-deb, a Debian python3 (>= 3.11) with the venv module, network access to PyPI (or a
# pip configured for a mirror). Environment: PYTHON (default /usr/bin/python3; its minor version
# becomes the package's Python dependency), DEB_REVISION (default 1), DEB_MAINTAINER.
# Prints the path of the built package on stdout; everything else goes to stderr.
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${1:-$src/dist}
python=${PYTHON:-/usr/bin/python3}
revision=${DEB_REVISION:-1}
maintainer=${DEB_MAINTAINER:-nfrx developers <nfrx@users.noreply.github.com>}
prefix=/opt/nfrx

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is missing, older than 3.11 or lacks venv (apt-get install python3-venv)"
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$("$python" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

work=$(mktemp -d "${TMPDIR:-/tmp}/nfrx-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$work/src" "$root/DEBIAN" "$out"

# 1. A copy of the checkout: tracked files plus new, not ignored ones (no .venv, no build/, no
#    stale egg-info). .git is linked in so setup.py can record the commit for `nfrx --version`.
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$work/src"
    ln -s "$(git -C "$src" rev-parse --absolute-git-dir)" "$work/src/.git"
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)}
else
    (cd "$src" && tar --exclude='./.venv*' --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' -cf - .) \
        | tar -xf - -C "$work/src"
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
fi
export SOURCE_DATE_EPOCH

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$work/src/nfrx/_version.py")
[ -n "$version" ] || die "no __version__ in nfrx/_version.py"
# PEP 440 pre-releases sort before the release in Debian only with a tilde: 1.0rc1 -> 1.0~rc1.
debversion=$(printf '%s' "$version" | sed -E 's/^([0-9.]+)[.-]?((a|b|rc|dev)[0-9]*)/\1~\2/')-$revision
arch=$(dpkg --print-architecture)

# 2. The virtual environment, built in the staging tree, then relocated to /opt/nfrx.
log "creating the virtual environment with $python ($pyver)"
"$python" -m venv "$root$prefix"
log "pip install $src (nfrx $version and its dependencies)"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$root$prefix/bin/python" -m pip install --quiet --no-compile \
    "$work/src" >&2
"$root$prefix/bin/python" -m pip uninstall --quiet --yes pip setuptools >&2
site=$("$root$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# direct_url.json only records the temporary source path.
for record in "$site"/nfrx-*.dist-info/RECORD; do
    sed -i '/direct_url\.json/d' "$record"
done
rm -f "$site"/nfrx-*.dist-info/direct_url.json
find "$root$prefix" -name __pycache__ -type d -prune -exec rm -rf {} +
grep -rlIZ -- "$root$prefix" "$root$prefix" | xargs -0 --no-run-if-empty sed -i "s#$root$prefix#$prefix#g"
if grep -rlI -- "$work" "$root"; then
    die "the files above still name the staging directory"
fi
rmdir "$root$prefix/include/python$pyver" "$root$prefix/include" 2>/dev/null || true
# Compiled extensions from the wheels: strip them as dh_strip would, and depend on the newest
# glibc symbol version they use.
libc=2.17
if command -v strip >/dev/null; then
    find "$root$prefix" -name '*.so' -type f -exec strip --strip-unneeded \
        --remove-section=.comment --remove-section=.note {} +
fi
if command -v objdump >/dev/null; then
    newest=$(find "$root$prefix" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null \
        | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    if [ -n "$newest" ]; then libc=$newest; fi
fi

# 3. Command, units, configuration, documentation.
mkdir -p "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/nfrx" "$root/usr/share/doc/nfrx"
ln -s "$prefix/bin/nfrx" "$root/usr/bin/nfrx"
install -m 644 "$src"/packaging/systemd/*.service "$root/lib/systemd/system/"
install -m 600 "$src/packaging/env/server.env" "$root/etc/nfrx/server.env"
for kind in llm mcp docling asr; do
    install -m 644 "$src/packaging/env/$kind.env" "$root/etc/nfrx/$kind.env.example"
done

shopt -s nullglob
for page in "$src"/nfrx/share/man/*.[1-9] "$src"/nfrx/share/man/*.[1-9].gz; do
    name=$(basename "$page" .gz)
    dir=$root/usr/share/man/man${name##*.}
    mkdir -p "$dir"
    if [ "$page" = "${page%.gz}" ]; then
        gzip -9n -c "$page" >"$dir/$name.gz"
    else
        install -m 644 "$page" "$dir/"
    fi
    chmod 644 "$dir/$name.gz"
done
for script in "$src"/nfrx/share/completions/*; do
    name=$(basename "$script")
    case $name in
        *.bash | *.bash-completion | nfrx) dest=usr/share/bash-completion/completions/nfrx ;;
        _* | *.zsh) dest=usr/share/zsh/vendor-completions/_nfrx ;;
        *.fish) dest=usr/share/fish/vendor_completions.d/nfrx.fish ;;
        *) continue ;;
    esac
    install -D -m 644 "$script" "$root/$dest"
done
shopt -u nullglob

install -m 644 "$here/copyright" "$root/usr/share/doc/nfrx/copyright"
install -D -m 644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/nfrx"
if [ -f "$src/CHANGELOG.md" ]; then
    gzip -9n -c "$src/CHANGELOG.md" >"$root/usr/share/doc/nfrx/changelog.gz"
fi
date_rfc=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
printf 'nfrx (%s) unstable; urgency=medium\n\n  * Upstream release %s, packaged by packaging/deb/build.sh.\n\n -- %s  %s\n' \
    "$debversion" "$version" "$maintainer" "$date_rfc" \
    | gzip -9n >"$root/usr/share/doc/nfrx/changelog.Debian.gz"
chmod 644 "$root"/usr/share/doc/nfrx/*

# 4. Control files.
for script in postinst prerm postrm; do
    install -m 755 "$here/maintscripts/$script" "$root/DEBIAN/$script"
done
find "$root/etc" -type f -printf '/etc/%P\n' | sort >"$root/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: nfrx
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: python3 (>= $pyver), python3 (<< $pynext), libc6 (>= $libc), adduser
Section: net
Priority: optional
Homepage: https://github.com/nfrx/nfrx
Description: gateway that puts private AI services behind one public server
 nfrx runs a public server (nfrx serve) and agents next to private AI services
 (nfrx llm for Ollama, llama.cpp, vLLM and other OpenAI-compatible backends).
 Agents dial out to the server over a WebSocket, so the private side never
 opens a port; clients call the server with the OpenAI or Anthropic APIs.
 .
 This package holds nfrx and its Python dependencies in a virtual environment
 in /opt/nfrx, systemd units (nfrx.service, nfrx-llm@.service, ...) and example
 settings in /etc/nfrx.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

# Directories 0755, whatever the umask of whoever unpacked the checkout.
find "$root" -type d -exec chmod 755 {} +
deb=$out/nfrx_${debversion}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
log "built $deb"
printf '%s\n' "$deb"
