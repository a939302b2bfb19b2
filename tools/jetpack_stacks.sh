#!/usr/bin/env bash
# JetPack's own Python stacks (shared/REFERENCE.md: the Ubuntu packages JetPack ships), for the tests that run
# deploy/ on them: JetPack 5 = Python 3.8, numpy 1.17.4, Pillow 7.0; JetPack 6 = Python 3.10, numpy 1.21.5,
# Pillow 9.0.1; and, since JetPack 5 users pip-install newer wheels to get ONNX Runtime, Python 3.8 with
# numpy 1.24.4 (the last for 3.8), Pillow 10.4 and onnxruntime 1.19.2, which runs the models. Each is made once into .venv-jetpack/<name> where its interpreter exists; where it does not, the
# tests that need it skip and say so. A failed install is reported and leaves no half-made stack.
set -u
cd "$(dirname "$0")/.."
ROOT=.venv-jetpack
mkdir -p "$ROOT"
make_stack() {
    local name=$1 python=$2; shift 2
    local target="$ROOT/$name"
    [ -f "$target/.stamp" ] && return 0
    if [ ! -x "$python" ]; then
        echo "jetpack-stacks: no $python here; the $name tests will skip" >&2
        return 0
    fi
    rm -rf "$target"
    echo "jetpack-stacks: making $name ($*)" >&2
    if "$python" -m venv "$target" && "$target/bin/python" -m pip install -q --disable-pip-version-check "$@" \
            > "$ROOT/$name.log" 2>&1; then
        touch "$target/.stamp"
    else
        echo "jetpack-stacks: could not install $* for $name (see $ROOT/$name.log); its tests will skip" >&2
        rm -rf "$target"
    fi
}
make_stack jetpack5 "${JETPACK5_PYTHON:-/root/.pyenv/versions/3.8.18/bin/python}" numpy==1.17.4 Pillow==7.0.0
make_stack jetpack6 "${JETPACK6_PYTHON:-/root/.pyenv/versions/3.10.13/bin/python}" numpy==1.21.5 Pillow==9.0.1
make_stack jetpack5-onnxruntime "${JETPACK5_PYTHON:-/root/.pyenv/versions/3.8.18/bin/python}" numpy==1.24.4 \
    Pillow==10.4.0 onnxruntime==1.19.2
exit 0
