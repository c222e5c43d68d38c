#!/usr/bin/env bash
# Re-vendor Leaflet from the npm registry into the viewer's static files (the viewer never
# loads anything from a CDN). Usage: tools/vendor-leaflet.sh [VERSION]   (default 1.9.4)
set -euo pipefail
version="${1:-1.9.4}"
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/pipeline/serve/static/vendor/leaflet"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "leaflet@$version" > pack.txt)
tarball="$work/$(tail -n1 "$work/pack.txt")"
tar -xzf "$tarball" -C "$work"
rm -rf "$dest"
mkdir -p "$dest/images"
cp "$work/package/dist/leaflet.js" "$work/package/dist/leaflet.js.map" \
   "$work/package/dist/leaflet.css" "$work/package/LICENSE" "$dest/"
cp "$work/package/dist/images/"*.png "$dest/images/"
sha="$(sha512sum "$tarball" | cut -d' ' -f1)"
cat > "$dest/VENDOR.json" <<JSON
{"package": "leaflet", "version": "$version", "source": "npm registry (npm pack)",
 "tarball_sha512": "$sha", "files": "dist/leaflet.js(.map), dist/leaflet.css, dist/images, LICENSE"}
JSON
echo "vendored leaflet $version into $dest"
