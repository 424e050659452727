#!/usr/bin/env bash
# Structural checks that keep the codebase readable:
#   1. no source file over 800 lines (aim for 400);
#   2. includes between layer folders point down the layers of DESIGN.md:
#        kernels <- tensor <- autograd <- dist, nn <- optim
#      (nn never includes dist: distribution plugs into autograd's hooks;
#       optim takes parameters, never a Module, so it does not include nn).
# examples/, tools/, bench/ and tests/ may include any layer.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
sources=$(git ls-files -co --exclude-standard -- '*.h' '*.cpp' '*.cu' '*.cuh' | grep -v '^build' || true)

for file in $sources; do
  lines=$(wc -l < "$file")
  if [ "$lines" -gt 800 ]; then
    echo "lint: $file has $lines lines; split it by concern (limit 800)"
    status=1
  fi
done

allowed_for() {
  case "$1" in
    kernels) echo "kernels" ;;
    tensor) echo "tensor kernels" ;;
    autograd) echo "autograd tensor kernels" ;;
    dist) echo "dist autograd tensor kernels" ;;
    nn) echo "nn autograd tensor kernels" ;;
    optim) echo "optim dist autograd tensor kernels" ;;
    *) echo "*" ;;
  esac
}

project_dirs="kernels tensor autograd dist nn optim examples tools bench tests"
for file in $sources; do
  layer=${file%%/*}
  allowed=$(allowed_for "$layer")
  [ "$allowed" = "*" ] && continue
  while IFS= read -r line; do
    target=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^/"]+)\/.*/\1/' <<< "$line")
    case " $project_dirs " in *" $target "*) ;; *) continue ;; esac
    case " $allowed " in
      *" $target "*) ;;
      *)
        echo "lint: $file includes $target/ (layer '$layer' may include only: $allowed)"
        status=1
        ;;
    esac
  done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^/"]+/' "$file" || true)
done

if [ $status -eq 0 ]; then
  echo "lint: $(wc -w <<< "$sources") files checked, layering and sizes ok"
fi
exit $status
