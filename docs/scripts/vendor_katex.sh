#!/usr/bin/env bash
# Vendor KaTeX from npm into docs/assets/katex/ so that math renders offline (no CDN at build
# or view time). Run from the repository root: `bash docs/scripts/vendor_katex.sh [VERSION]`.
# Needs npm (only to fetch the package tarball); nothing is installed in the repository.
set -euo pipefail
version="${1:-0.19.1}"
dest="docs/assets/katex"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "katex@${version}" >/dev/null && tar xzf "katex-${version}.tgz")
rm -rf "$dest"
mkdir -p "$dest/contrib" "$dest/fonts"
cp "$tmp/package/dist/katex.min.js" "$tmp/package/dist/katex.min.css" "$dest/"
cp "$tmp/package/dist/contrib/auto-render.min.js" "$dest/contrib/"
cp "$tmp/package/dist/fonts/"* "$dest/fonts/"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "$version" > "$dest/VERSION"
echo "KaTeX $version vendored into $dest"
