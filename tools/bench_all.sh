#!/usr/bin/env bash
# Run every benchmark in benches/ (whichever exist: io, validate, and the pass benches quantize / prune / lowrank
# as they land) one after the other, then print one table of every figure line they printed.
#
#   tools/bench_all.sh            # everything (the io bench builds a 2.28 GB model under target/: check df first)
#   tools/bench_all.sh --quick    # io without its 2 GB case
#
# Each bench prints its figures beside the peers it measured in the same run (cp, Python onnx, ONNX Runtime...);
# this script only gathers them: `cargo bench` alone runs them too, with their own output.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=()
for f in benches/*.rs; do
    name=$(basename "$f" .rs)
    [ "$name" = "all" ] && continue
    # only benches declared in Cargo.toml (a file another branch adds without its [[bench]] entry is skipped)
    if ! grep -q "^name = \"$name\"" Cargo.toml; then
        status+=("$name: not declared in Cargo.toml, skipped")
        continue
    fi
    args=()
    [ "$name" = "io" ] && [ $quick = 1 ] && args=(-- --skip-2gb)
    echo "== cargo bench --bench $name ${args[*]}" >&2
    if cargo bench --bench "$name" "${args[@]}" >"$out/$name.txt" 2>"$out/$name.err"; then
        status+=("$name: ok")
    else
        status+=("$name: FAILED (exit $?; last error line: $(tail -n1 "$out/$name.err"))")
    fi
done
echo
echo "| bench | figure |"
echo "|---|---|"
for t in "$out"/*.txt; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .txt)
    grep -v '^\s*$' "$t" | grep -v '^running \|^test result' | while IFS= read -r line; do
        printf '| %s | %s |\n' "$name" "${line//|/\\|}"
    done
done
echo
printf '%s\n' "${status[@]}"
