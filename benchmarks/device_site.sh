#!/usr/bin/env bash
# Builds .devsite/site: the project's Python dependencies that the GPU machine's image lacks
# (kedro, omegaconf, pydantic, pycocotools, ...), unpacked for Python 3.12 on x86-64 so that a
# device run can put them on PYTHONPATH (the machine has no network; see gpu_issue15.sh).
# Run here, in the project's environment, from any folder:  bash benchmarks/device_site.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.devsite
rm -rf "$dest"
mkdir -p "$dest/wheels" "$dest/site"
# The versions this environment runs (the image already has torch, numpy, pandas, pyarrow, ...).
binary=$(python -c 'import importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in ["pydantic-core", "pycocotools"]))')
pure=$(python -c 'import importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in ["kedro", "omegaconf", "pydantic", "annotated-types", "typing-inspection"]))')
evalcap=$(python -c 'import importlib.metadata as m; print(m.version("pycocoevalcap"))')
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVSITE_PYTHON:-3.12}" \
  --implementation cp "${platforms[@]}" -d "$dest/wheels" $binary
python -m pip wheel -q --no-deps -w "$dest/wheels" $pure
for w in "$dest"/wheels/*.whl; do unzip -q -o "$w" -d "$dest/site"; done
# pycocoevalcap's wheel is 104 MB of Java jars; the GPU checks need only its pure-Python BLEU
# and CIDEr (training validation), so only those two subpackages travel.
python -m pip download -q --no-deps -d "$dest/evalcap" "pycocoevalcap==$evalcap"
unzip -q -o "$dest"/evalcap/*.whl 'pycocoevalcap/bleu/*' 'pycocoevalcap/cider/*' -d "$dest/site"
rm -rf "$dest/wheels" "$dest/evalcap"
du -sh "$dest"
