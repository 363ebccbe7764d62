#!/usr/bin/env bash
# Scan a model, write the HTML report, and take a headless Chromium screenshot of it: the
# check that the report renders in a real browser with no network.
#
#   scripts/screenshot_report.sh [MODEL] [OUT.png] [-- extra scan arguments]
#
# Defaults: the bundled badnets-s0 trojan scanned against its base, with its held-out
# texts as probes; the screenshot goes to report.png and the report beside it
# (report.html). Needs chromium, chromium-browser or google-chrome on PATH (or $CHROME).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-testdata/zoo/badnets-s0}
out=${2:-report.png}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
html="${out%.png}.html"
extra=("$@")
if [ ${#extra[@]} -eq 0 ] && [ "$model" = testdata/zoo/badnets-s0 ]; then
    extra=(--base testdata/zoo/clean-base-s0 --probe testdata/zoo/badnets-s0/heldout.jsonl)
fi
# Exit codes 0, 3, 4 and 5 are verdicts, not failures.
set +e
cargo run --release -q -- scan "$model" "${extra[@]}" --format html --out "$html" --quiet
code=$?
set -e
if [ "$code" -ne 0 ] && [ "$code" -lt 3 ]; then
    echo "scan failed (exit $code)" >&2
    exit "$code"
fi
browser=${CHROME:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$browser" ]; then
    echo "no Chromium found (set \$CHROME); the report is at $html" >&2
    exit 1
fi
# No network: background networking, component updates and sync would only try to
# reach Google's hosts. A throwaway profile keeps the run from touching the user's.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless=new --disable-gpu --no-sandbox --hide-scrollbars --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1100,2600 --screenshot="$(realpath -m "$out")" \
    "file://$(realpath "$html")"
echo "scan exit $code; report $html; screenshot $out"
